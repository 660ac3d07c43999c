"""`circmesh export`, `circmesh import` and `circmesh snapshot refresh`: commands for a running desk, through its API.

The desk owns its SQLite file while it runs, so the commands talk to it over HTTP like a browser would,
signed in as a staff user (name and password from CIRCMESH_USER / CIRCMESH_PASSWORD, or asked for).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path

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


def run_snapshot_refresh(args: argparse.Namespace) -> int:
    """Asks the bridge for a refresh; with --wait, follows /status until a newer version is in use or the
    refresh says why it failed (bounded: a million patrons take about two minutes)."""
    login = credentials()

    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            headers = await signed_in(session, args.desk, login)
            async with session.post(f"{args.desk}/api/v1/snapshot/refresh", json={}, headers=headers) as r:
                body = await r.json(content_type=None)
            if "error" in body:
                print(f"circmesh snapshot refresh: {body['error']['message']}", file=sys.stderr)
                return 1
            before = body.get("version") or 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1800
            while args.wait and loop.time() < deadline:
                await asyncio.sleep(1)
                async with session.get(f"{args.desk}/api/v1/status", headers=headers) as r:
                    body = (await r.json(content_type=None))["snapshot"]
                refresh = body.get("refresh") or {}
                if (body.get("version") or 0) > before and refresh.get("state") == "idle":
                    break
                if refresh.get("state") == "failed":
                    print(f"circmesh snapshot refresh: {refresh.get('last_error')}", file=sys.stderr)
                    return 1
            else:
                if args.wait:
                    print("circmesh snapshot refresh: still running after 30 minutes", file=sys.stderr)
                    return 1
        print(json.dumps(body))
        return 0

    return asyncio.run(main())
