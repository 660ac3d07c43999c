"""Staff accounts of one desk: names, roles and argon2 password hashes in the node's data directory.

The file is shared with `circmesh user add`, which may run while the node is serving, so the store
re-reads it whenever it changes on disk. It is written whole to a temporary file (mode 0600) and renamed
over the old one, so a reader never sees half a file.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = logging.getLogger(__name__)
USERS_FILE = "users.json"
ROLES = ("staff", "admin")
PASSWORD_ENV = "CIRCMESH_PASSWORD"
MIN_PASSWORD = 4
MAX_PASSWORD = 1024
MAX_NAME = 64


class UserError(ValueError):
    """A user name, role or password that cannot be stored."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    hash: str


def normal_name(name: object) -> str:
    """Names compare case-insensitively and after Unicode normalisation: `Desk` and `desk` are one user."""
    if not isinstance(name, str):
        raise UserError("name must be text")
    cleaned = unicodedata.normalize("NFKC", name).strip()
    if not 1 <= len(cleaned) <= MAX_NAME or any(ord(c) < 32 or (c.isspace() and c != " ") for c in cleaned):
        raise UserError(f"name must be 1-{MAX_NAME} printable characters")
    return cleaned.casefold()


def check_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    return password


class UserStore:
    def __init__(self, data_dir: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(data_dir) / USERS_FILE
        self.hasher = hasher or PasswordHasher()
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int, int] | None = None
        # Checked when the name is unknown, so that an unknown name costs as long as a wrong password.
        self._decoy = self.hasher.hash("circmesh decoy password")

    # ---- reading
    def _load(self) -> dict[str, User]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._users, self._stamp = {}, None
            return self._users
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # each write replaces the file: a new inode
        if stamp != self._stamp:
            users = {}
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                for entry in raw["users"]:
                    if entry["role"] in ROLES:
                        users[normal_name(entry["name"])] = User(entry["name"], entry["role"], entry["hash"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                # Fail closed: nobody signs in on a damaged file, and the log says why.
                log.error("%s is unreadable (%s): no one can sign in until it is fixed", self.path, e)
                users = {}
            self._users, self._stamp = users, stamp
        return self._users

    def get(self, name: str) -> User | None:
        try:
            return self._load().get(normal_name(name))
        except UserError:
            return None

    def names(self) -> list[tuple[str, str]]:
        return sorted((u.name, u.role) for u in self._load().values())

    def __len__(self) -> int:
        return len(self._load())

    def verify(self, name: object, password: object) -> User | None:
        """The user if the password is right, else None. Slow on purpose (argon2): call it off the loop."""
        try:
            user = self._load().get(normal_name(name))
            check_password(password)
        except UserError:
            user, password = None, "x" * MIN_PASSWORD
        try:
            self.hasher.verify(user.hash if user else self._decoy, password)  # type: ignore[arg-type]
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user

    # ---- writing
    def add(self, name: str, password: str, role: str) -> bool:
        """Creates the user, or replaces the password and role of an existing one; True if it was new."""
        key = normal_name(name)
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}")
        users = dict(self._load())
        is_new = key not in users
        display = unicodedata.normalize("NFKC", name).strip()
        users[key] = User(display, role, self.hasher.hash(check_password(password)))
        self._write(users)
        return is_new

    def remove(self, name: str) -> bool:
        users = dict(self._load())
        if users.pop(normal_name(name), None) is None:
            return False
        self._write(users)
        return True

    def _write(self, users: dict[str, User]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"users": [{"name": u.name, "role": u.role, "hash": u.hash} for u in users.values()]}
        tmp = self.path.with_name(f".{USERS_FILE}.{os.getpid()}.{time.monotonic_ns()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(body, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._stamp = None


# ---- `circmesh user …`
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a staff user, or set an existing user's password and role",
                         description=("Adds a user who can sign in to this desk's web UI. The password is "
                                      f"read from the environment variable {PASSWORD_ENV} or from standard "
                                      "input (asked twice on a terminal); never from the command line."))
    add.add_argument("--data", required=True, type=Path, help="the node's data directory")
    add.add_argument("--name", required=True, help="the name staff type to sign in")
    add.add_argument("--role", choices=ROLES, default="staff", help="staff (desk work) or admin (also "
                     "settles conflicts and manages desks); default staff")
    ls = sub.add_parser("list", help="list the users of a desk")
    ls.add_argument("--data", required=True, type=Path, help="the node's data directory")
    rm = sub.add_parser("remove", help="remove a user")
    rm.add_argument("--data", required=True, type=Path, help="the node's data directory")
    rm.add_argument("--name", required=True, help="the user to remove")


def _read_password() -> str:
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise UserError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def run(args: argparse.Namespace) -> int:
    store = UserStore(args.data)
    try:
        if args.user_command == "add":
            is_new = store.add(args.name, _read_password(), args.role)
            verb = "added" if is_new else "updated"
            print(f"circmesh: {verb} {args.role} user {args.name!r} in {store.path}")
            return 0
        if args.user_command == "list":
            for name, role in store.names():
                print(f"{name}\t{role}")
            return 0
        if args.user_command == "remove":
            if store.remove(args.name):
                print(f"circmesh: removed user {args.name!r}")
                return 0
            print(f"circmesh: no user {args.name!r}", file=sys.stderr)
            return 1
    except UserError as e:
        print(f"circmesh user: {e}", file=sys.stderr)
        return 2
    return 2
