"""A desk API client run *inside* a desk's network namespace (the test process is outside the virtual
LAN and must never join it): signs in, does one request, prints the JSON answer.

usage: python tests/lan_client.py METHOD URL [JSON_BODY]
"""

from __future__ import annotations

import json
import sys
import urllib.request

USER, PASSWORD = "tester", "correct horse battery"  # tests.procs.TEST_USER / TEST_PASSWORD


def call(method: str, url: str, body: object | None = None, token: str | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # loopback of the namespace only
            return json.load(r)
    except urllib.error.HTTPError as e:
        return {"http_status": e.code, **json.load(e)}


def main() -> None:
    method, url = sys.argv[1], sys.argv[2]
    body = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    base = url.split("/api/")[0]
    token = call("POST", f"{base}/api/v1/session", {"name": USER, "password": PASSWORD})["token"]  # type: ignore[index]
    print(json.dumps(call(method, url, body, token)))


if __name__ == "__main__":
    main()
