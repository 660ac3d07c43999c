"""`circmesh init`, `circmesh join`, `circmesh admit`: how a desk becomes part of a cluster.

init   — on the first desk: creates the cluster's CA; this desk is its first admin.
admit  — on the admin desk: prints a one-time code for a new desk (valid 15 minutes, one use).
join   — on the new desk: `--admin HOST:PEERPORT --code CODE` joins with that code; without `--code`
         the desk files a request and shows a code of its own for the admin to type in the admin screen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from pathlib import Path

from node.cluster import CLUSTER_FILE, init_cluster, save_membership
from node.trust.identity import load_or_create_identity


def add_init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="this desk's data directory")
    p.add_argument("--desk", required=True, help="this desk's name, as staff will see it")
    p.add_argument("--cluster-name", default="circmesh", help="the library's name for the cluster")


def add_join_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="this desk's data directory")
    p.add_argument("--desk", required=True, help="this desk's name, as staff will see it")
    p.add_argument("--admin", required=True, metavar="HOST:PORT", help="the admin desk's peer address")
    p.add_argument("--code", help="the one-time code shown on the admin desk (omit it to show a code here "
                   "that the admin types instead)")


def add_admit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--desk-url", default="http://127.0.0.1:8080", help="the admin desk's web address")
    p.add_argument("--role", choices=("desk", "admin"), default="desk", help="role of the new desk")


def run_init(args: argparse.Namespace) -> int:
    identity = load_or_create_identity(args.data)
    try:
        membership = init_cluster(args.data, identity, args.desk, args.cluster_name)
    except ValueError as e:
        print(f"circmesh init: {e}", file=sys.stderr)
        return 2
    print(f"cluster {membership.cluster_name!r} ({membership.cluster_id}) created; "
          f"{args.desk} is its admin desk (node {identity.node_id}).")
    print(f"The CA key is in {args.data / 'ca'} (mode 0600): back it up, it admits new desks.")
    return 0


def _unverified_tls() -> ssl.SSLContext:
    """Before joining, the desk cannot know the cluster CA; the one-time code authenticates the admin desk
    and everything it answers (an HMAC keyed from the code), so TLS here only hides the exchange."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def run_join(args: argparse.Namespace) -> int:
    from cryptography.x509.oid import NameOID

    from node.trust.enrolment import EnrolmentError, EnrolmentResult
    from node.trust.enrolment_http import request_enrolment, submit_join_request, wait_for_approval

    if (args.data / CLUSTER_FILE).exists():
        print(f"circmesh join: {args.data} already belongs to a cluster", file=sys.stderr)
        return 2
    identity = load_or_create_identity(args.data)
    admin = args.admin if "://" in args.admin else f"https://{args.admin}"

    async def main() -> EnrolmentResult:
        ctx = _unverified_tls()
        if args.code:
            return await request_enrolment(admin, args.code, identity.key, args.desk, ssl_context=ctx)
        pending = await submit_join_request(admin, identity.key, args.desk, ssl_context=ctx)
        print(f"Ask an admin to approve this desk with the code  {pending.code}  (valid 15 minutes)", flush=True)
        return await wait_for_approval(pending, ssl_context=ctx)

    try:
        result = asyncio.run(main())
    except EnrolmentError as e:
        print(f"circmesh join: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"circmesh join: cannot reach the admin desk at {args.admin}: {e}", file=sys.stderr)
        return 1
    names = result.ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    save_membership(args.data, cluster_id=result.cluster_id, cluster_name=str(names[0].value) if names else "",
                    role=result.role, ca_cert=result.ca_cert, node_cert=result.node_cert)
    role = "an admin desk" if result.role == "admin" else "a desk"
    print(f"{args.desk} joined cluster {result.cluster_id} as {role} (CA fingerprint {result.ca_fingerprint}).")
    return 0


def run_admit(args: argparse.Namespace) -> int:
    import getpass

    import aiohttp

    name = os.environ.get("CIRCMESH_USER") or input("admin name: ")
    password = os.environ.get("CIRCMESH_PASSWORD") or getpass.getpass("password: ")

    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{args.desk_url}/api/v1/session", json={"name": name, "password": password}) as r:
                body = await r.json(content_type=None)
                if r.status != 200:
                    print(f"circmesh admit: sign-in refused: {body}", file=sys.stderr)
                    return 1
            headers = {"Authorization": f"Bearer {body['token']}"}
            async with session.post(f"{args.desk_url}/api/v1/enrolment/codes", json={"role": args.role},
                                    headers=headers) as r:
                body = await r.json(content_type=None)
                if r.status != 201:
                    print(f"circmesh admit: {body.get('error', {}).get('message', body)}", file=sys.stderr)
                    return 1
        what = "an admin desk" if args.role == "admin" else "a new desk"
        print(f"One-time code for {what}: {body['code']}  (valid until {body['expires']}, one use)")
        return 0

    return asyncio.run(main())
