"""The simulator's SQLite schema: a small Koha-shaped library.

Checkout ids are AUTOINCREMENT: a returned loan moves to old_checkouts under its id, which must never be
handed out again. Money is kept in cents (integers) so that payments add up exactly. Times are UTC text
`YYYY-MM-DD HH:MM:SS`, dates `YYYY-MM-DD`.
"""

from __future__ import annotations

import sqlite3

TABLES = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS categories (
    category_id TEXT PRIMARY KEY, description TEXT NOT NULL, loan_limit INTEGER NOT NULL,
    fine_limit_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS item_types (
    item_type_id TEXT PRIMARY KEY, description TEXT NOT NULL, media_type TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS loan_rules (
    category_id TEXT NOT NULL, item_type_id TEXT NOT NULL, loan_days INTEGER NOT NULL,
    renewals_allowed INTEGER NOT NULL, PRIMARY KEY (category_id, item_type_id));
CREATE TABLE IF NOT EXISTS holidays (day TEXT PRIMARY KEY, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patrons (
    patron_id INTEGER PRIMARY KEY, cardnumber TEXT NOT NULL, surname TEXT NOT NULL,
    firstname TEXT NOT NULL, category_id TEXT NOT NULL, library_id TEXT NOT NULL,
    date_of_birth TEXT, date_enrolled TEXT NOT NULL, expiry_date TEXT NOT NULL, email TEXT, phone TEXT,
    debarred_until TEXT, debarred_comment TEXT, lost_card INTEGER NOT NULL DEFAULT 0,
    gone_no_address INTEGER NOT NULL DEFAULT 0, fines_cents INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS items (
    item_id INTEGER PRIMARY KEY, biblio_id INTEGER NOT NULL, barcode TEXT NOT NULL, title TEXT NOT NULL,
    author TEXT NOT NULL, callnumber TEXT NOT NULL, item_type_id TEXT NOT NULL,
    home_library_id TEXT NOT NULL, location TEXT NOT NULL, not_for_loan INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS checkouts (
    checkout_id INTEGER PRIMARY KEY AUTOINCREMENT, patron_id INTEGER NOT NULL, item_id INTEGER NOT NULL,
    library_id TEXT NOT NULL, checkout_date TEXT NOT NULL, due_date TEXT NOT NULL,
    renewals_count INTEGER NOT NULL DEFAULT 0, last_renewed_date TEXT);
CREATE TABLE IF NOT EXISTS old_checkouts (
    checkout_id INTEGER PRIMARY KEY, patron_id INTEGER NOT NULL, item_id INTEGER NOT NULL,
    library_id TEXT NOT NULL, checkout_date TEXT NOT NULL, due_date TEXT NOT NULL,
    renewals_count INTEGER NOT NULL, last_renewed_date TEXT, checkin_date TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS holds (
    hold_id INTEGER PRIMARY KEY, patron_id INTEGER NOT NULL, item_id INTEGER NOT NULL,
    priority INTEGER NOT NULL, hold_date TEXT NOT NULL, status TEXT, pickup_library_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payments (
    payment_id INTEGER PRIMARY KEY, patron_id INTEGER NOT NULL, amount_cents INTEGER NOT NULL,
    paid_at TEXT NOT NULL, protocol TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending_offline_operations (
    operationid INTEGER PRIMARY KEY, userid TEXT, branchcode TEXT, timestamp TEXT, action TEXT,
    barcode TEXT, cardnumber TEXT, amount TEXT);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, protocol TEXT NOT NULL, action TEXT NOT NULL,
    timestamp TEXT, cardnumber TEXT, barcode TEXT, amount TEXT, outcome TEXT NOT NULL,
    recorded_at TEXT NOT NULL);
"""

# Built after the bulk insert: much faster than maintaining them row by row.
INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS patrons_cardnumber ON patrons (cardnumber);
CREATE UNIQUE INDEX IF NOT EXISTS items_barcode ON items (barcode);
CREATE UNIQUE INDEX IF NOT EXISTS checkouts_item ON checkouts (item_id);
CREATE INDEX IF NOT EXISTS checkouts_patron ON checkouts (patron_id);
CREATE INDEX IF NOT EXISTS holds_item ON holds (item_id, priority);
CREATE INDEX IF NOT EXISTS holds_patron ON holds (patron_id);
"""


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=OFF")
    return db
