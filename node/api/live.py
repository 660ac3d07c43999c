"""The live feed: every event this node learns of, pushed to each connected browser as it arrives."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from node.crdt.core import Arrival
from node.crdt.event import Event
from node.tasks import reap

log = logging.getLogger(__name__)
QUEUE_LIMIT = 10_000


class LiveFeed:
    def __init__(self, event_json: Callable[[Event], dict[str, Any]]) -> None:
        """`event_json`: how an event is shown (node/views.py)."""
        self.event_json = event_json
        self.clients: set[asyncio.Queue[str | None]] = set()

    def publish(self, arrival: Arrival) -> None:
        if not self.clients:
            return  # nobody watching: don't encode (a healed partition brings thousands at once)
        text = json.dumps({"type": "event", "local": arrival.local, "pos": arrival.pos,
                           "event": self.event_json(arrival.event)})
        for queue in list(self.clients):
            if queue.qsize() >= QUEUE_LIMIT:
                self.clients.discard(queue)  # too slow a reader: cut it off, it can page /events
                queue.put_nowait(None)
            else:
                queue.put_nowait(text)

    def close(self) -> None:
        """Ends every feed (the node is stopping): an open browser tab must not hold up the web server's
        shutdown. The browsers reconnect to whichever desk comes back."""
        for queue in self.clients:
            queue.put_nowait(None)
        self.clients.clear()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.clients.add(queue)

        async def drain_incoming() -> None:
            async for msg in ws:  # the feed is one-way; reading notices the close
                if msg.type == WSMsgType.ERROR:
                    break

        reader = asyncio.create_task(drain_incoming())
        try:
            while not reader.done():
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                text = getter.result()
                if text is None:
                    break
                await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.clients.discard(queue)
            await reap(reader)
            await ws.close()
        return ws
