"""The web UI's words: every language has every string with the same placeholders, every key the markup and
scripts use exists, and the markup itself holds no text of its own (all of it comes from web/i18n/)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from node.crdt import conflicts

WEB = Path(__file__).resolve().parent.parent / "web"
LANGUAGES = ("en", "de", "cs", "zh-CN")
PLURAL_FORMS = {"zero", "one", "two", "few", "many", "other"}


def load(language: str) -> dict[str, Any]:
    return json.loads((WEB / "i18n" / f"{language}.json").read_text(encoding="utf-8"))


def leaves(node: dict[str, Any], prefix: str = "") -> dict[str, list[str]]:
    """key path -> its text(s); a plural entry ({one, other, …}) is one leaf with several texts."""
    out: dict[str, list[str]] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and set(value) <= PLURAL_FORMS:
            assert "other" in value, f"{path}: a plural entry needs an 'other' form"
            out[path] = list(value.values())
        elif isinstance(value, dict):
            out.update(leaves(value, path + "."))
        else:
            assert isinstance(value, str) and value.strip(), f"{path} is empty"
            out[path] = [value]
    return out


def placeholders(texts: list[str]) -> set[str]:
    return {name for text in texts for name in re.findall(r"\{(\w+)\}", text)}


ENGLISH = leaves(load("en"))


@pytest.mark.parametrize("language", LANGUAGES[1:])
def test_every_language_has_every_string_with_the_same_placeholders(language: str) -> None:
    other = leaves(load(language))
    assert set(other) == set(ENGLISH), {"missing": sorted(set(ENGLISH) - set(other)),
                                        "extra": sorted(set(other) - set(ENGLISH))}
    for key, texts in ENGLISH.items():
        theirs = placeholders(other[key])
        ours = placeholders(texts)
        assert theirs == ours or (theirs <= ours and "count" in ours), (language, key, theirs, ours)


def test_plural_entries_have_the_forms_each_language_needs() -> None:
    needs = {"en": {"one", "other"}, "de": {"one", "other"}, "cs": {"one", "few", "many", "other"},
             "zh-CN": {"other"}}
    for language, forms in needs.items():
        for key in leaves(load(language)):
            if len(ENGLISH[key]) > 1:  # a plural entry in English
                entry: Any = load(language)
                for part in key.split("."):
                    entry = entry[part]
                assert forms <= set(entry), (language, key)


class MarkupText(HTMLParser):
    """Collects text and labelling attributes written in the markup itself."""

    SKIP = frozenset({"kbd", "title", "script", "style"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.texts: list[str] = []
        self.attributes: list[str] = []
        self.keys: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack.append(tag)
        values = dict(attrs)
        if values.get("data-i18n"):
            self.keys.add(values["data-i18n"] or "")
        for pair in (values.get("data-i18n-attr") or "").split(";"):
            if ":" in pair:
                self.keys.add(pair.split(":", 1)[1].strip())
        for name in ("placeholder", "aria-label", "title", "alt"):
            if values.get(name):
                self.attributes.append(f"{tag}[{name}={values[name]!r}]")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if data.strip() and not self.SKIP & set(self.stack):
            self.texts.append(data.strip())


def test_the_markup_holds_no_words_only_keys_that_exist() -> None:
    parser = MarkupText()
    parser.feed((WEB / "index.html").read_text(encoding="utf-8"))
    assert parser.texts == []
    assert parser.attributes == []
    assert parser.keys and parser.keys <= set(ENGLISH), sorted(parser.keys - set(ENGLISH))


def test_every_key_the_scripts_name_exists() -> None:
    used: set[str] = set()
    for script in (WEB / "js").rglob("*.js"):
        used |= set(re.findall(r"""\bt\(\s*'([\w.]+)'""", script.read_text(encoding="utf-8")))
    assert len(used) > 50
    assert used <= set(ENGLISH), sorted(used - set(ENGLISH))
    # keys the scripts build from the API's own codes
    for mode in ("checkout", "checkin", "renew", "payment", "inhouse", "register"):
        assert {f"mode.{mode}.tab", f"mode.{mode}.title", f"mode.{mode}.hint"} <= set(ENGLISH)
    kinds = [v for k, v in vars(conflicts).items() if k.isupper() and isinstance(v, str)]
    assert kinds and all(f"conflicts.kind.{kind}.title" in ENGLISH for kind in kinds)
    for status in ("applied", "refused", "pending"):
        assert f"outcome.{status}" in ENGLISH
    for action in ("void", "keep", "accept_ils", "apply", "acknowledge"):
        assert f"conflicts.action_name.{action}" in ENGLISH
    for who in ("self", "other"):  # the cluster bar's clock pill
        assert {f"cluster.clock_{who}_ahead", f"cluster.clock_{who}_behind"} <= set(ENGLISH)
    for source in ("link", "log"):  # /status clock_suspects[].sources
        assert f"cluster.clock_source.{source}" in ENGLISH
    for by in ("link", "log", "order"):  # the upload report's ils_at_by
        assert f"uploads.corrected_by.{by}" in ENGLISH


def test_the_scripts_hold_no_words() -> None:
    """Text put on the page by a script comes from t(): no quoted words straight into text or labels."""
    offenders = []
    pattern = re.compile(r"(textContent\s*=\s*|text:\s*|title:\s*|'aria-label':\s*)"
                         r"(['\"`])[^'\"`]*[A-Za-z]{2}")
    for script in (WEB / "js").rglob("*.js"):
        for number, line in enumerate(script.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{script.name}:{number}: {line.strip()}")
    assert offenders == []
