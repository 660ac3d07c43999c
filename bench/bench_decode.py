"""Reading a received event: envelope checks plus the body read through its declared schema (issues 8, 9).

Every event a desk receives or loads from its journal is decoded once, so this cost is paid per event on
catch-up and start-up. Baselines, same run: msgpack.unpackb of the same bytes (the floor any decoder
stands on), and the body check alone. CPU seconds of this one process.
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (puts the project on sys.path)
import msgpack

from node.crdt.bodies import body_problem, plainly_readable
from node.crdt.event import _decode_full, decode_event
from tests.factories import DUE, SimDesk

N = 20_000


def main() -> None:
    desk = SimDesk()
    kinds = [("checkout", {"patron": "23000000000003", "item": "39000000000007", "due": DUE}),
             ("checkin", {"item": "39000000000007"}),
             ("payment", {"patron": "23000000000003", "amount": "2.50"})]
    raws = [desk.write(*kinds[i % 3][:1], **kinds[i % 3][1]).encode() for i in range(N)]

    def timed(work) -> float:
        start = time.process_time()
        for raw in raws:
            work(raw)
        return (time.process_time() - start) / N * 1e6

    floor = timed(lambda raw: msgpack.unpackb(raw, raw=False))
    decoded = [decode_event(raw) for raw in raws]
    bodies = [(e.kind, msgpack.packb(e.body), e.at, e.staff) for e in decoded]
    start = time.process_time()
    for kind, body, at, staff in bodies:
        plainly_readable(kind, body, at, staff)
    in_c = (time.process_time() - start) / N * 1e6
    start = time.process_time()
    for e in decoded:
        body_problem(e.kind, e.body, e.at, e.staff)
    body_only = (time.process_time() - start) / N * 1e6
    full = timed(decode_event)
    reading = timed(_decode_full)
    assert all(e.problem is None for e in decoded)
    print(f"decode_event: {full:.2f} us/event of CPU ({N} events); msgpack alone {floor:.2f} us "
          f"(x{full / floor:.1f}); the body's check from its bytes {in_c:.2f} us ({in_c / full:.0%} of decode)")
    print(f"the full reading (for unusual events): {reading:.2f} us, its body check {body_only:.2f} us")


if __name__ == "__main__":
    main()
