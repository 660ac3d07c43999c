"""`circmesh export`, `circmesh import`, `circmesh snapshot refresh` and `circmesh snapshot import`: commands for a
running desk, through its API.

The desk owns its SQLite file while it runs, so the commands talk to it over HTTP like a browser would,
signed in as a staff user (name and password from CIRCMESH_USER / CIRCMESH_PASSWORD, or asked for).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

FORMATS = ("koc", "offcirc", "evergreen")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--desk", default="http://127.0.0.1:8080", help="the desk's URL (default http://127.0.0.1:8080)")
    p.add_argument("--format", required=True, choices=FORMATS, help="koc (Koha), offcirc (Alma), evergreen")
    p.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    p.add_argument("--tz", help="time zone for formats written in local time (default: this machine's)")


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a .koc, OffCirc.dat or pending.xacts file")
    p.add_argument("--desk", default="http://127.0.0.1:8080", help="the desk's URL (default http://127.0.0.1:8080)")
    p.add_argument("--format", choices=FORMATS, help="the file's format (default: recognised from its content)")
    p.add_argument("--skip-errors", action="store_true",
                   help="record the good lines of a file that has bad ones (default: record nothing)")
    p.add_argument("--tz", help="time zone the file's local times are in (default: this machine's)")


def add_refresh_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--desk", default="http://127.0.0.1:8080",
                   help="the bridge desk's URL (default http://127.0.0.1:8080)")
    p.add_argument("--wait", action="store_true", help="wait until the new snapshot is in use (or the refresh fails)")


def add_snapshot_import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patrons", type=Path, required=True,
                   help="a CSV of patrons with Koha's borrowers columns (cardnumber, surname, firstname, categorycode, "
                        "branchcode, dateexpiry, debarred, ...), such as Koha's patron export")
    p.add_argument("--items", type=Path, help="a CSV of items (barcode, title, author, itemcallnumber, itype, "
                                              "homebranch, notforloan, itemlost, withdrawn)")
    p.add_argument("--desk", default="http://127.0.0.1:8080", help="the desk's URL (default http://127.0.0.1:8080)")
    p.add_argument("--wait", action="store_true", help="wait until the new snapshot is in use (or the build fails)")


def credentials() -> tuple[str, str]:
    name = os.environ.get("CIRCMESH_USER") or input("staff name: ")
    password = os.environ.get("CIRCMESH_PASSWORD") or getpass.getpass("password: ")
    return name, password


async def signed_in(session: aiohttp.ClientSession, desk: str, credentials: tuple[str, str]) -> dict[str, str]:
    name, password = credentials
    async with session.post(f"{desk}/api/v1/session", json={"name": name, "password": password}) as r:
        if r.status == 404:
            return {}
        body = await r.json(content_type=None)
        if r.status != 200:
            raise SystemExit(f"circmesh: sign-in refused: {body.get('error', {}).get('message', r.status)}")
        return {"Authorization": f"Bearer {body['token']}"}


def run_export(args: argparse.Namespace) -> int:
    login = credentials()

    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            headers = await signed_in(session, args.desk, login)
            params = {"format": args.format} | ({"tz": args.tz} if args.tz else {})
            async with session.get(f"{args.desk}/api/v1/export", params=params, headers=headers) as r:
                if r.status != 200:
                    print(f"circmesh export: {await r.text()}", file=sys.stderr)
                    return 1
                data = await r.read()
                skipped = r.headers.get("X-Circmesh-Skipped", "0")
        if args.output:
            args.output.write_bytes(data)
        else:
            sys.stdout.buffer.write(data)
        if skipped != "0":
            print(f"circmesh export: {skipped} event(s) cannot be written in {args.format} and were left out",
                  file=sys.stderr)
        return 0

    return asyncio.run(main())


def run_import(args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as e:
        print(f"circmesh import: {e}", file=sys.stderr)
        return 2

    login = credentials()

    async def main() -> int:
        # No overall deadline: the desk answers a file of many megabytes only once every line is recorded.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            headers = await signed_in(session, args.desk, login)
            params = {"skip_errors": "true" if args.skip_errors else "false", "name": args.file.name}
            if args.format:
                params["format"] = args.format
            if args.tz:
                params["tz"] = args.tz
            async with session.post(f"{args.desk}/api/v1/imports", params=params, data=data,
                                    headers=headers | {"Content-Type": "application/octet-stream"}) as r:
                body = await r.json(content_type=None)
        if "error" in body:
            print(f"circmesh import: {body['error']['message']}", file=sys.stderr)
            return 1
        for e in body["errors"]:
            print(f"{args.file.name}:{e['line']}: {e['reason']}" + (f"  [{e['text']}]" if e["text"] else ""))
        print(json.dumps({k: body[k] for k in ("format", "recorded", "skipped")}))
        if body.get("message"):
            print(body["message"], file=sys.stderr)
        return 0 if not body["errors"] else 1

    return asyncio.run(main())


def run_snapshot(args: argparse.Namespace) -> int:
    """`snapshot refresh` asks the bridge for a refresh; `snapshot import` sends files to a desk. With --wait,
    follows /status until a newer version is in use or it says why it failed (bounded: a million patrons
    take a few minutes)."""
    importing = args.snapshot_command == "import"
    what = f"circmesh snapshot {args.snapshot_command}"
    part = "file_import" if importing else "refresh"
    for path in [args.patrons, args.items] if importing else []:
        if path is not None and not path.is_file():
            print(f"{what}: no such file: {path}", file=sys.stderr)
            return 2
    login = credentials()

    async def start(session: aiohttp.ClientSession, headers: dict[str, str]) -> dict[str, Any]:
        if not importing:
            async with session.post(f"{args.desk}/api/v1/snapshot/refresh", json={}, headers=headers) as r:
                body: dict[str, Any] = await r.json(content_type=None)
                return body
        form = aiohttp.FormData()
        for name, f in opened.items():
            form.add_field(name, f, filename=Path(f.name).name, content_type="text/csv")  # streamed, not read
        async with session.post(f"{args.desk}/api/v1/snapshot/import", data=form, headers=headers) as r:
            body = await r.json(content_type=None)
            return body

    async def main() -> int:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            headers = await signed_in(session, args.desk, login)
            body = await start(session, headers)
            if "error" in body:
                print(f"{what}: {body['error']['message']}", file=sys.stderr)
                return 1
            before = body.get("version") or 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1800
            while args.wait and loop.time() < deadline:
                await asyncio.sleep(1)
                async with session.get(f"{args.desk}/api/v1/status", headers=headers) as r:
                    body = (await r.json(content_type=None))["snapshot"]
                state = (body.get(part) or {}).get("state")
                if (body.get("version") or 0) > before and state == "idle":
                    break
                if state == "failed":
                    print(f"{what}: {(body.get(part) or {}).get('last_error')}", file=sys.stderr)
                    return 1
            else:
                if args.wait:
                    print(f"{what}: still running after 30 minutes", file=sys.stderr)
                    return 1
        print(json.dumps(body))
        return 0

    with contextlib.ExitStack() as files:
        opened = {name: files.enter_context(open(getattr(args, name), "rb"))
                  for name in ("patrons", "items") if importing and getattr(args, name) is not None}
        return asyncio.run(main())
