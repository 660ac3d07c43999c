"""Patrons' personal data is not kept for ever: a snapshot older than the library's retention is purged once
nothing of the outage is left to upload.

A desk whose bridge refreshes every few hours never holds a snapshot that old; one that has not had a new
snapshot for the retention (a desk taken out of service, an ILS gone for good, the integration switched off;
a library that builds its snapshots from files must import again within it) deletes it, its chunks, and
its key (overwritten and deleted first, so that copies of the files cannot be read either), and fetches no
snapshot that old again. While any scan of the outage is still to be uploaded the snapshot stays, and one
that old is still fetched: staff may need it to settle what the ILS refuses.
"""

from __future__ import annotations

DAY_MS = 86_400_000
RETENTION_DAYS = 30.0


def expired(ils_time: int, now_ms: int, retention_ms: int) -> bool:
    """Whether a snapshot of the ILS read at `ils_time` is past the retention."""
    return now_ms - ils_time > retention_ms
