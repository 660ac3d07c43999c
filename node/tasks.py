"""Ending helper tasks without swallowing the caller's own cancellation.

`task.cancel()` followed by `with suppress(CancelledError): await task` also swallows a cancel aimed at the
*caller* if it lands during that await: a peer link that ended just as its desk was told to stop kept its
dial loop running, and the desk's stop waited on it forever (issue 8). `reap` waits with asyncio.wait,
which lets the caller's cancellation through.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def reap(*tasks: asyncio.Future[Any] | None, within: float | None = None) -> bool:
    """Cancels the tasks and waits, at most `within` seconds, for them to end; True when they all did.
    Their exceptions are retrieved and dropped: a helper's error no longer matters once it is reaped."""
    pending = {t for t in tasks if t is not None}
    for task in pending:
        task.cancel()
    if not pending:
        return True
    done, still_running = await asyncio.wait(pending, timeout=within)
    for task in done:
        if not task.cancelled():
            task.exception()
    return not still_running
