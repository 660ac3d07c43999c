"""Seeds the simulator's library deterministically: the same seed and day give the same library.

The library is meant to look like a real one to a desk: patron categories with loan limits, cardnumbers,
names from many languages, expired cards, blocked patrons (debarred, lost card, gone no address), fines,
items of several types with call numbers, items already on loan (some overdue), holds with patrons waiting,
a loan-rule table and an opening calendar. A million patrons seed in well under a minute: rows are made by
generators and written with executemany in big batches inside one transaction, indexes come last.
"""

from __future__ import annotations

import random
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice

from node.ilsbridge.sim import schema
from node.ilsbridge.sim.rules import Calendar, LoanRule, default_holidays, due_date, format_timestamp

LIBRARY_ID = "MAIN"
LIBRARY_NAME = "circmesh Public Library"
BATCH = 50_000

# category_id: (description, loan limit, fine limit in cents that blocks lending, share of patrons, ages)
CATEGORIES: dict[str, tuple[str, int, int, float, tuple[int, int]]] = {
    "ADULT": ("Adult", 20, 1000, 0.55, (18, 80)),
    "CHILD": ("Child", 10, 500, 0.20, (5, 15)),
    "STUDENT": ("Student", 15, 1000, 0.15, (17, 29)),
    "SENIOR": ("Senior", 20, 1000, 0.08, (65, 95)),
    "STAFF": ("Staff", 50, 5000, 0.02, (22, 66)),
}

# item_type_id: (description, SIP2 media type, share of items, loan days, renewals)
ITEM_TYPES: dict[str, tuple[str, str, float, int, int]] = {
    "BOOK": ("Book", "001", 0.68, 21, 3),
    "DVD": ("DVD", "006", 0.10, 7, 1),
    "MAGAZINE": ("Magazine", "002", 0.08, 7, 0),
    "AUDIOBOOK": ("Audiobook", "004", 0.07, 14, 2),
    "REFERENCE": ("Reference book", "001", 0.07, 0, 0),
}

FIRST_NAMES = (
    "Anna",
    "Lukas",
    "Sofia",
    "Jonas",
    "Emma",
    "Noah",
    "Mia",
    "Elias",
    "Léa",
    "Hugo",
    "Zoë",
    "Chloé",
    "José",
    "María",
    "Ana-María",
    "Jürgen",
    "Björn",
    "Søren",
    "Åsa",
    "Łukasz",
    "Małgorzata",
    "Jiří",
    "Tereza",
    "Dvořáková",
    "Ömer",
    "Ayşe",
    "Ngozi",
    "Chinedu",
    "Aroha",
    "Priya",
    "Arjun",
    "Mei",
    "Hiroshi",
    "Yuki",
    "Seo-yeon",
    "Min-jun",
    "Olivia",
    "Liam",
    "Amara",
    "Kwame",
    "Fatima",
    "Youssef",
    "Siobhán",
    "Seán",
    "Ingrid",
    "Matteo",
    "Giulia",
    "Nikolai",
    "Олег",
    "Наталья",
    "伟",
    "芳",
    "Thảo",
    "Minh",
    "Ebba",
    "Oskar",
    "Pál",
    "Zsófia",
    "Rafael",
    "Inês",
)
LAST_NAMES = (
    "Müller",
    "Dvořák",
    "王",
    "李",
    "张",
    "García",
    "Fernández",
    "Nguyễn",
    "Smith",
    "Johnson",
    "O'Brien",
    "Ó Súilleabháin",
    "Kowalski",
    "Wiśniewska",
    "Novák",
    "Svoboda",
    "Øster",
    "Åberg",
    "Lindqvist",
    "Schröder",
    "Weiß",
    "Dubois",
    "Lefèvre",
    "Rossi",
    "Esposito",
    "Silva",
    "Gonçalves",
    "Yılmaz",
    "Öztürk",
    "Okafor",
    "Adeyemi",
    "Mensah",
    "Tanaka",
    "Suzuki",
    "Kim",
    "Park",
    "Patel",
    "Sharma",
    "Haddad",
    "Al-Sayed",
    "Cohen",
    "Levi",
    "Ivanov",
    "Смирнов",
    "Popescu",
    "Horváth",
    "Nagy",
    "Jensen",
    "Hansen",
    "Murphy",
    "Walsh",
    "Taylor",
    "Brown",
    "Wilson",
    "Martin",
    "Bernard",
    "Van der Berg",
    "De Vries",
    "Papadopoulos",
    "Kaya",
)
TITLE_WORDS_A = (
    "The Silent",
    "A Winter",
    "The Last",
    "Hidden",
    "The Glass",
    "Northern",
    "The Forgotten",
    "Small",
    "The Long",
    "Bright",
    "The Secret",
    "Distant",
    "The Paper",
    "Wild",
    "The Quiet",
    "Burning",
    "Salt",
    "The Iron",
    "Midnight",
    "Paper",
)
TITLE_WORDS_B = (
    "River",
    "Garden",
    "Library",
    "Harbour",
    "Orchard",
    "Kingdom",
    "Lighthouse",
    "Mountain",
    "Archive",
    "Forest",
    "Atlas",
    "Island",
    "Letters",
    "Machine",
    "Bridge",
    "Meadow",
    "Cartographer",
    "Station",
    "Winter",
    "Orchestra",
    "Tides",
    "Stars",
)
SUBJECTS = (
    "a history",
    "a novel",
    "poems",
    "stories",
    "a guide",
    "an introduction",
    "a memoir",
    "essays",
)
DEBAR_REASONS = ("Overdue notices ignored", "Damaged items", "Unpaid replacement cost", "Staff decision")


@dataclass(frozen=True)
class SeedSpec:
    patrons: int = 2000
    items: int = 5000
    seed: int = 1
    today: date | None = None

    @property
    def key(self) -> str:
        """What makes two seeded libraries the same (the day only shifts their dates)."""
        return f"patrons={self.patrons} items={self.items} seed={self.seed}"


def ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def cardnumber(i: int) -> str:
    return f"23{i:012d}"


def item_barcode(i: int) -> str:
    return f"39{i:012d}"


def calendar_for(today: date) -> Calendar:
    years = range(today.year - 2, today.year + 4)
    return Calendar(closed_weekdays=frozenset({6}), holidays=default_holidays(years))


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    out[-1] = float("inf")
    return out


def _pick(cum: list[float], names: list[str], r: float) -> str:
    for bound, name in zip(cum, names, strict=True):
        if r < bound:
            return name
    return names[-1]


def patron_rows(rng: random.Random, n: int, today: date, categories_out: list[str]) -> Iterator[tuple]:
    """Rows for the patrons table. Appends each patron's category to `categories_out` (used for loans)."""
    cat_names = list(CATEGORIES)
    cum = _cumulative([CATEGORIES[c][3] for c in cat_names])
    base = today.toordinal()
    for i in range(1, n + 1):
        cat = _pick(cum, cat_names, rng.random())
        categories_out.append(cat)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        lo, hi = CATEGORIES[cat][4]
        dob = date.fromordinal(base - rng.randint(lo * 365, hi * 365)).isoformat()
        if rng.random() < 0.05:
            expiry = base - rng.randint(1, 700)
        else:
            expiry = base + rng.randint(30, 1100)
        enrolled = date.fromordinal(expiry - 3 * 365 - rng.randint(0, 2000)).isoformat()
        debarred = comment = None
        lost = gone = 0
        r = rng.random()
        if r < 0.02:
            debarred = (
                "9999-12-31"
                if rng.random() < 0.3
                else date.fromordinal(base + rng.randint(5, 200)).isoformat()
            )
            comment = rng.choice(DEBAR_REASONS)
        elif r < 0.03:
            lost = 1
        elif r < 0.04:
            gone = 1
        fines = rng.randint(5, 250) * 10 if rng.random() < 0.12 else 0
        slug = ascii_slug(first) or "patron"
        yield (
            i,
            cardnumber(i),
            last,
            first,
            cat,
            LIBRARY_ID,
            dob,
            enrolled,
            date.fromordinal(expiry).isoformat(),
            f"{slug}.{i}@patrons.example.org",
            f"555-{rng.randint(0, 9999):04d}",
            debarred,
            comment,
            lost,
            gone,
            fines,
        )


def item_rows(rng: random.Random, m: int, item_types_out: list[str]) -> Iterator[tuple]:
    type_names = list(ITEM_TYPES)
    cum = _cumulative([ITEM_TYPES[t][2] for t in type_names])
    for i in range(1, m + 1):
        itype = _pick(cum, type_names, rng.random())
        item_types_out.append(itype)
        surname, first = rng.choice(LAST_NAMES), rng.choice(FIRST_NAMES)
        title = f"{rng.choice(TITLE_WORDS_A)} {rng.choice(TITLE_WORDS_B)}: {rng.choice(SUBJECTS)}"
        callnumber = (
            f"{rng.randint(0, 999):03d}.{rng.randint(0, 99):02d} {ascii_slug(surname)[:3].upper() or 'XXX'}"
        )
        location = {"REFERENCE": "REF", "DVD": "AV", "AUDIOBOOK": "AV", "MAGAZINE": "PER"}.get(itype, "GEN")
        yield (
            i,
            i,
            item_barcode(i),
            title,
            f"{surname}, {first}",
            callnumber,
            itype,
            LIBRARY_ID,
            location,
            1 if itype == "REFERENCE" else 0,
        )


def _batched(rows: Iterator[tuple]) -> Iterator[list[tuple]]:
    while batch := list(islice(rows, BATCH)):
        yield batch


def seed(db: sqlite3.Connection, spec: SeedSpec) -> None:
    """Fill an empty database. Everything happens in one transaction."""
    today = spec.today or datetime.now(UTC).date()
    rng = random.Random(spec.seed)
    calendar = calendar_for(today)
    db.executescript(schema.TABLES)
    with db:
        settings = {
            "seed_key": spec.key,
            "today": today.isoformat(),
            "library_id": LIBRARY_ID,
            "library_name": LIBRARY_NAME,
            "closed_weekdays": ",".join(str(d) for d in sorted(calendar.closed_weekdays)),
        }
        db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)", settings.items())
        db.executemany(
            "INSERT INTO categories VALUES (?, ?, ?, ?)",
            [(c, d, lim, fl) for c, (d, lim, fl, _, _) in CATEGORIES.items()],
        )
        db.executemany(
            "INSERT INTO item_types VALUES (?, ?, ?)",
            [(t, d, mt) for t, (d, mt, _, _, _) in ITEM_TYPES.items()],
        )
        rules: dict[tuple[str, str], LoanRule] = {}
        for cat in CATEGORIES:
            for itype, (_, _, _, days, renewals) in ITEM_TYPES.items():
                if cat == "STAFF" and days:
                    days, renewals = days * 2, renewals + 2
                rules[(cat, itype)] = LoanRule(days, renewals)
        db.executemany(
            "INSERT INTO loan_rules VALUES (?, ?, ?, ?)",
            [(c, t, r.loan_days, r.renewals_allowed) for (c, t), r in rules.items()],
        )
        db.executemany(
            "INSERT INTO holidays VALUES (?, ?)",
            [(d.isoformat(), "Public holiday") for d in sorted(calendar.holidays)],
        )
        patron_cats: list[str] = []
        for batch in _batched(patron_rows(rng, spec.patrons, today, patron_cats)):
            db.executemany(f"INSERT INTO patrons VALUES ({','.join('?' * 16)})", batch)
        item_types: list[str] = []
        for batch in _batched(item_rows(rng, spec.items, item_types)):
            db.executemany(f"INSERT INTO items VALUES ({','.join('?' * 10)})", batch)
        _seed_loans_and_holds(db, rng, today, calendar, rules, patron_cats, item_types)
    db.executescript(schema.INDEXES)


def _seed_loans_and_holds(
    db: sqlite3.Connection,
    rng: random.Random,
    today: date,
    calendar: Calendar,
    rules: dict[tuple[str, str], LoanRule],
    patron_cats: list[str],
    item_types: list[str],
) -> None:
    n = len(patron_cats)
    if n == 0:
        return
    checkouts, holds = [], []
    checkout_id = hold_id = 0
    for item_id, itype in enumerate(item_types, start=1):
        if itype == "REFERENCE":
            continue
        on_loan = rng.random() < 0.08
        if on_loan:
            patron_id = rng.randint(1, n)
            day = today - timedelta(days=rng.randint(0, 40))
            while not calendar.is_open(day):
                day -= timedelta(days=1)
            start = datetime(day.year, day.month, day.day, rng.randint(9, 18), rng.randint(0, 59), tzinfo=UTC)
            due = due_date(start, rules[(patron_cats[patron_id - 1], itype)], calendar)
            checkout_id += 1
            checkouts.append(
                (
                    checkout_id,
                    patron_id,
                    item_id,
                    LIBRARY_ID,
                    format_timestamp(start),
                    format_timestamp(due),
                    0,
                    None,
                )
            )
        if rng.random() < (0.25 if on_loan else 0.02):  # patrons queue mostly for items that are out
            borrower = checkouts[-1][1] if on_loan else 0
            waiting = not on_loan and rng.random() < 0.5
            priority = 0
            for k in range(rng.randint(1, 3)):
                patron_id = rng.randint(1, n)
                if patron_id == borrower:
                    continue
                status = "W" if waiting and k == 0 else None
                if status is None:
                    priority += 1
                hold_id += 1
                placed = today - timedelta(days=rng.randint(1, 60))
                holds.append(
                    (
                        hold_id,
                        patron_id,
                        item_id,
                        0 if status else priority,
                        placed.isoformat(),
                        status,
                        LIBRARY_ID,
                    )
                )
    db.executemany(f"INSERT INTO checkouts VALUES ({','.join('?' * 8)})", checkouts)
    db.executemany(f"INSERT INTO holds VALUES ({','.join('?' * 7)})", holds)
