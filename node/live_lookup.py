"""What the ILS says now of a card or item the desk's snapshot does not hold, asked at scan time by a desk that
can reach the ILS.

A SIP2-only library has no snapshot until an admin imports files, and a card issued since the last refresh
is in no snapshot. While the ILS answers, a desk with ILS access (`--ils`: today the bridge) asks it as the
item is scanned (SIP2 patron information 63/64 and item information 17/18; Koha: REST look-ups), with a
short deadline so that a slow ILS does not keep the patron waiting. The answer is read through the same
schemas as a refresh (node/snapshot/rows.py), and the same warnings follow from it (scan_warnings.py). No
answer in time, or no ILS access: the warnings the desk can give without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from node.ilsbridge.adapters.base import AdapterUnsupported, IlsUnavailable
from node.ports import SnapshotView
from node.snapshot.rows import Item, Patron, item_from_koha, patron_from_koha

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 1.5  # seconds: then the desk goes on without the ILS's word


class LookupSource(Protocol):
    """The ILS adapter's look-ups (node/ilsbridge/adapters/): rows in Koha's REST shape."""

    async def patron_info(self, card: str) -> dict[str, Any] | None: ...

    async def item_info(self, barcode: str) -> tuple[dict[str, Any] | None, str | None]: ...


@dataclass(frozen=True)
class Live:
    """What the ILS said just now. `*_known` is None where it was not asked or did not answer in time."""

    patron: Patron | None = None
    patron_known: bool | None = None
    item: Item | None = None
    item_known: bool | None = None
    holder: str | None = None  # who has the item at the ILS now (None: nobody, or the ILS does not say)


class LiveLookup:
    def __init__(self, source: LookupSource | None, reachable: Callable[[], bool], snapshot: SnapshotView | None,
                 timeout: float = LOOKUP_TIMEOUT) -> None:
        self.source = source
        self.snapshot = snapshot
        self.reachable = reachable  # the bridge's last probe: an ILS known to be down is not asked
        self.timeout = timeout

    async def checkout(self, patron: str, item: str) -> Live:
        """Asks the ILS of what the snapshot does not hold; never raises."""
        source, snapshot = self.source, self.snapshot
        if source is None or not self.reachable():
            return Live()
        held = snapshot is not None and snapshot.manifest is not None
        need_patron = not held or snapshot is None or snapshot.patron(patron) is None
        need_item = not held or snapshot is None or snapshot.item(item) is None
        if not (need_patron or need_item):
            return Live()
        (p, p_known), (i, i_known, holder) = await asyncio.gather(
            self._patron(source, patron) if need_patron else _no_patron(),
            self._item(source, item) if need_item else _no_item())
        return Live(p, p_known, i, i_known, holder)

    async def _patron(self, source: LookupSource, card: str) -> tuple[Patron | None, bool | None]:
        try:
            async with asyncio.timeout(self.timeout):
                row = await source.patron_info(card)
        except (TimeoutError, IlsUnavailable, AdapterUnsupported) as e:
            log.info("live look-up of a patron: no answer (%s)", type(e).__name__)
            return None, None
        except Exception:  # whatever the ILS sent: the scan goes on without its word
            log.exception("live look-up of a patron failed")
            return None, None
        if row is None:
            return None, False  # the ILS says: no such patron
        found = patron_from_koha(row)
        return found, (True if found is not None else None)  # a row that does not fit says nothing

    async def _item(self, source: LookupSource, barcode: str) -> tuple[Item | None, bool | None, str | None]:
        try:
            async with asyncio.timeout(self.timeout):
                row, holder = await source.item_info(barcode)
        except (TimeoutError, IlsUnavailable, AdapterUnsupported) as e:
            log.info("live look-up of an item: no answer (%s)", type(e).__name__)
            return None, None, None
        except Exception:
            log.exception("live look-up of an item failed")
            return None, None, None
        if row is None:
            return None, False, None
        found = item_from_koha(row)
        return found, (True if found is not None else None), holder if isinstance(holder, str) and holder else None


async def _no_patron() -> tuple[Patron | None, bool | None]:
    return None, None


async def _no_item() -> tuple[Item | None, bool | None, str | None]:
    return None, None, None
