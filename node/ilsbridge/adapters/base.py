"""What the bridge needs from any ILS, and how to get an adapter and its credentials.

An adapter turns an `Operation` into the ILS's own request and the ILS's answer into an `Outcome`
(applied / refused / transient, in the ILS's own words). It also answers "who has this item at the ILS
now", which a new bridge uses to reconcile events whose outcome the old bridge never recorded, and pages
through patrons, items and checkouts for snapshots where the protocol allows it.

URLs: `koha+http://host:port` or `koha+https://host/prefix` (Koha's offline-circulation service and its
REST API on the same base; options `?branchcode=CODE&category=CODE&pending=true&timeout=SECONDS`, where
`branchcode` and `category` are also the library and patron category of patrons registered at a desk), and
`sip2://host:port` (SIP2 for operations and reconciliation; options `?institution=AO&location=CP&pool=N&
timeout=SECONDS&currency=USD&rest=http://host:port` where `rest` is a Koha-style REST base for snapshots).

Credentials never come from the command line: a file (`user=…` / `password=…` lines, or JSON
{"user", "password"}) or the environment (CIRCMESH_ILS_USER, CIRCMESH_ILS_PASSWORD).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from node.ilsbridge.operation import Operation, Outcome

SnapshotKind = Literal["patrons", "items", "checkouts"]
SNAPSHOT_KINDS: tuple[str, ...] = ("patrons", "items", "checkouts")
# The id each kind is paged by (keyset paging: `fetch_after`).
ID_FIELDS: dict[SnapshotKind, str] = {"patrons": "patron_id", "items": "item_id", "checkouts": "checkout_id"}
USER_ENV = "CIRCMESH_ILS_USER"
PASSWORD_ENV = "CIRCMESH_ILS_PASSWORD"


class AdapterUnsupported(Exception):
    """The ILS protocol cannot do this at all (not a passing failure)."""


class SnapshotUnsupported(AdapterUnsupported):
    """The protocol has no way to page through patrons, items or checkouts."""


class IlsUnavailable(Exception):
    """The ILS could not answer a query now (offline, timeout, 5xx, refused login): try again later."""


class CredentialsError(ValueError):
    """The ILS credentials are missing or unreadable."""


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)


@runtime_checkable
class IlsAdapter(Protocol):
    async def probe(self) -> bool:
        """True when the ILS answers now."""
        ...

    async def apply(self, op: Operation) -> Outcome:
        """Send one operation; never raises for ILS or network trouble (that is a transient Outcome)."""
        ...

    async def current_loan(self, item_barcode: str) -> str | None:
        """Cardnumber of the patron who has the item at the ILS now, None if it is not on loan.
        Raises IlsUnavailable when the ILS cannot answer now."""
        ...

    async def fetch_after(self, kind: SnapshotKind, after: int, per_page: int) -> list[dict[str, Any]]:
        """Rows whose id (patron_id, item_id, checkout_id) is above `after`, in id order; [] past the end."""
        ...

    async def fetch_page(self, kind: SnapshotKind, page: int, per_page: int) -> list[dict[str, Any]]:
        """One page (from 1) of patrons, items or checkouts, Koha's field names; [] past the end.
        Raises SnapshotUnsupported where the protocol cannot, IlsUnavailable when the ILS cannot now."""
        ...

    async def fetch_rules(self) -> tuple[Any, Any]:
        """Koha's circulation rule sets and the opening calendar (JSON; None for one the ILS lacks).
        Raises SnapshotUnsupported where the protocol cannot, IlsUnavailable when the ILS cannot now."""
        ...

    async def patron_info(self, card: str) -> dict[str, Any] | None:
        """What the ILS says of a card now, in Koha's REST shape; None: no such patron. Raises IlsUnavailable
        when the ILS cannot answer now."""
        ...

    async def item_info(self, barcode: str) -> tuple[dict[str, Any] | None, str | None]:
        """What the ILS says of an item now (Koha's REST shape; None: no such item) and who has it."""
        ...

    async def close(self) -> None: ...


def load_credentials(path: str | None, env: Mapping[str, str]) -> Credentials:
    """Credentials from `path` if given, else from the environment; CredentialsError says what is missing."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(f"cannot read the ILS credentials file {path}: {exc}") from None
        values = _parse_credentials(text, path)
        source = f"the credentials file {path}"
    else:
        values = {"user": env.get(USER_ENV, ""), "password": env.get(PASSWORD_ENV, "")}
        source = f"the environment ({USER_ENV}, {PASSWORD_ENV})"
    missing = [k for k in ("user", "password") if not values.get(k)]
    if missing:
        raise CredentialsError(f"ILS {' and '.join(missing)} missing from {source}")
    return Credentials(values["user"], values["password"])


def _parse_credentials(text: str, path: str) -> dict[str, str]:
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise CredentialsError(f"the credentials file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"the credentials file {path} must hold a JSON object")
        user = data.get("user", data.get("userid", ""))
        password = data.get("password", "")
        if not isinstance(user, str) or not isinstance(password, str):
            raise CredentialsError(f"user and password in {path} must be strings")
        return {"user": user, "password": password}
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("user", "userid", "password"):
            raise CredentialsError(f"{path}, line {number}: expected user=… or password=…")
        values["user" if key == "userid" else key] = value.strip()
    return values


def make_adapter(url: str, credentials: Credentials) -> IlsAdapter:
    """The adapter for `url` (see the module docstring for the forms and options)."""
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    scheme = parts.scheme.lower()
    if scheme in ("koha+http", "koha+https"):
        from node.ilsbridge.adapters.koha import KohaAdapter

        if not parts.hostname:
            raise ValueError(f"no host in ILS URL {url!r}")
        base = f"{scheme.removeprefix('koha+')}://{parts.netloc}{parts.path.rstrip('/')}"
        return KohaAdapter(
            base,
            credentials,
            branchcode=options.get("branchcode", ""),
            category=options.get("category", ""),
            pending=options.get("pending", "").lower() == "true",
            timeout=_float_option(options, "timeout", 10.0),
        )
    if scheme == "sip2":
        from node.ilsbridge.adapters.sip2 import Sip2Adapter

        if not parts.hostname:
            raise ValueError(f"no host in ILS URL {url!r}")
        try:
            port = parts.port or 6001
        except ValueError:
            raise ValueError(f"bad port in ILS URL {url!r}") from None
        rest = options.get("rest")
        if rest is not None and urlsplit(rest).scheme not in ("http", "https"):
            raise ValueError(f"rest= must be an http(s) URL, got {rest!r}")
        return Sip2Adapter(
            parts.hostname,
            port,
            credentials,
            institution=options.get("institution", ""),
            location=options.get("location", ""),
            pool_size=int(_float_option(options, "pool", 4)),
            timeout=_float_option(options, "timeout", 10.0),
            currency=options.get("currency", "USD"),
            rest_base=rest.rstrip("/") if rest else None,
        )
    raise ValueError(f"unsupported ILS URL {url!r}: use koha+http://, koha+https:// or sip2://")


def _float_option(options: Mapping[str, str], name: str, default: float) -> float:
    if name not in options:
        return default
    try:
        value = float(options[name])
    except ValueError:
        raise ValueError(f"ILS URL option {name} must be a number, got {options[name]!r}") from None
    if value <= 0:
        raise ValueError(f"ILS URL option {name} must be positive")
    return value
