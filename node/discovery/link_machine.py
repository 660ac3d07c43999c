"""The peer link as a sans-I/O state machine: frames and outcomes in, typed actions out.

As h11 and wsproto do for HTTP and WebSocket, it never touches a socket, a clock or the log, so every rule
about what a peer may send, and when, lives here and is tested with lists of frames
(tests/test_link_machine.py). `PeerLink` (link.py) is the loop around it: it hands over WebSocket messages,
the time and what the log answered, and does what the actions say.

    AWAIT_HELLO ── a hello that passes ──► SYNCING ── the peer hangs up, or a refusal ──► CLOSED
         └──── garbage, not a hello, ourselves, an impostor, another version, no hello in time ──► CLOSED

While SYNCING, two things travel: Automerge sync messages for the current epoch's document (only between
desks in the same epoch: a message for another epoch's document is dropped, not refused, since either side
may have just moved), and journal runs (catchup.py) for whatever the document did not bring: this side
asks with `want` for ranges the plan gives it, and a run is taken only inside what was asked and in order;
a peer's `want` is served by the loop. Snapshot chunks travel the same way: asked by name (`chunks`), served
by the loop, and taken only if asked; whether a chunk's bytes are right is the fetcher's to judge.

Every way this side ends a link is a `Close(Refusal)`; the peer hanging up (`closed()`) is not a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from node.crdt.epochs import FIRST_TAG, EpochTag
from node.crdt.refusals import Refusal, Refused
from node.discovery import frames

HELLO_TIMEOUT = 10.0  # seconds a peer has to say hello
TIP_EVERY = 2.0  # seconds: clock offset, lag and the bridge's state stay fresh on quiet links
MAX_WANTS = 64  # a peer's `want`s waiting to be served; more is a flood
MAX_CHUNKS_ASKED = 64  # chunks asked of a peer and not yet answered


class State(Enum):
    AWAIT_HELLO = "await_hello"
    SYNCING = "syncing"
    CLOSED = "closed"


@dataclass(frozen=True)
class Now:
    """When an input happens, as the loop read it: the machine reads no clock."""

    mono: float  # seconds on a monotonic clock: the hello timeout and the tip period
    wall: int  # milliseconds since the epoch: our hello and tips, the peer's clock offset


@dataclass
class LinkInfo:
    """What is known of the peer at the other end; the peer table reports it in /status."""

    node: str
    desk: str
    address: str
    outbound: bool
    connected_at: float = 0.0  # seconds since the epoch
    peer_vector: dict[str, int] = field(default_factory=dict)
    peer_epoch: EpochTag = FIRST_TAG
    clock_offset_ms: int = 0
    received_events: int = 0
    sync_bytes_in: int = 0
    sync_bytes_out: int = 0
    run_events_in: int = 0  # events received in journal runs (the bulk path)
    run_events_out: int = 0
    run_bytes_in: int = 0  # the events' bytes in those runs
    run_bytes_out: int = 0
    chunk_bytes_in: int = 0  # snapshot chunks
    chunk_bytes_out: int = 0
    bridge: dict[str, Any] | None = None


# ---- actions: what the loop is asked to do, in order


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class ApplySync:
    """Verify and apply this sync message (EventLog.receive_sync) if `epoch` is this desk's epoch (else drop
    it: one side has just moved); report with sync_applied / sync_refused."""

    message: bytes
    epoch: str


@dataclass(frozen=True)
class CatchUp:
    """The peer's vector or epoch changed: ask the plan what to want of it (then call `want`)."""


@dataclass(frozen=True)
class ServeRuns:
    """The peer wants these journal ranges: send them as runs (`run_frames`), the last of each `done`."""

    ranges: list[tuple[str, int, int]]


@dataclass(frozen=True)
class ApplyRun:
    """Verify and keep this run (EventLog.receive_run); report with run_applied / sync_refused."""

    run: frames.Run


@dataclass(frozen=True)
class ServeChunks:
    """The peer wants these snapshot chunks: send each (`chunk_frame`), data None for one not held."""

    names: list[str]


@dataclass(frozen=True)
class ApplyChunk:
    """A chunk that was asked for (or None: the peer has not got it): hand it to the fetcher."""

    name: str
    data: bytes | None


@dataclass(frozen=True)
class GenerateSync:
    """A write round is due: once the log is durable, hand each sync message Automerge generates to
    `sync_message`, then offer a `tip`. Never sooner: no peer may hold an event its author could lose."""


@dataclass(frozen=True)
class Linked:
    info: LinkInfo


@dataclass(frozen=True)
class Close:
    """End the link. `report`: count it in /status (False when the log counted it already, as it does
    every refusal in a sync message, or when the kind is not counted)."""

    reason: Refusal
    detail: str
    report: bool = True


Action = Send | ApplySync | GenerateSync | Linked | Close | CatchUp | ServeRuns | ApplyRun | ServeChunks | ApplyChunk


class LinkMachine:
    """One link's rules. `node` and `desk` are ours; `proven` is the node id the peer's TLS certificate
    proved (None without TLS): its hello must name that node."""

    def __init__(self, node: str, desk: str, *, address: str, outbound: bool, proven: str | None = None) -> None:
        self.node, self.desk = node, desk
        self.address, self.outbound, self.proven = address, outbound, proven
        self.state = State.AWAIT_HELLO
        self.info: LinkInfo | None = None
        self.closed_for: Refusal | None = None
        self._hello_by: float | None = None
        self._tip_at = 0.0  # when the last tip went (or the link came up)
        self._last_tip: tuple[dict[str, int], dict[str, Any] | None, EpochTag] | None = None
        self.asked: dict[str, tuple[int, int]] = {}  # node -> (next seq expected, last asked)
        self.wants_waiting = 0  # the peer's wants handed to the loop and not yet served
        self.chunks_asked: set[str] = set()  # snapshot chunks asked of the peer, not yet answered

    # ---- our hello carries what we hold
    def hello(self, epoch: EpochTag, vector: dict[str, int], now: Now) -> list[Action]:
        """Our hello, first thing each way; the peer's must come within HELLO_TIMEOUT."""
        if self.state is not State.AWAIT_HELLO or self._hello_by is not None:
            return []
        self._hello_by = now.mono + HELLO_TIMEOUT
        return [Send(frames.encode(frames.Hello(self.node, self.desk, now.wall, epoch=epoch, vector=vector)))]

    # ---- inputs from the peer
    def start(self, now: Now) -> list[Action]:
        """A hello saying we hold nothing yet (tests; a desk says what it holds with `hello`)."""
        return self.hello(FIRST_TAG, {}, now)

    def receive(self, data: bytes | str, now: Now) -> list[Action]:
        """One WebSocket message from the peer (a text message is garbage too)."""
        if self.state is State.CLOSED:
            return []
        try:
            frame = frames.decode(data)
        except frames.FrameError as e:
            return self._close(Refusal.GARBAGE, str(e))
        if self.state is State.AWAIT_HELLO:
            if not isinstance(frame, frames.Hello):
                return self._close(Refusal.NO_HELLO, f"first frame was a {type(frame).__name__.lower()}, not a hello")
            return self._hello(frame, now)
        assert self.info is not None
        if isinstance(frame, frames.Hello):
            return self._close(Refusal.UNEXPECTED_HELLO, "a second hello")
        if isinstance(frame, frames.Sync):
            self.info.sync_bytes_in += len(frame.message)
            return [ApplySync(frame.message, frame.epoch)]
        if isinstance(frame, frames.Want):
            if self.wants_waiting >= MAX_WANTS:
                return self._close(Refusal.FLOOD, f"more than {MAX_WANTS} wants waiting")
            self.wants_waiting += 1
            return [ServeRuns(frame.ranges)]
        if isinstance(frame, frames.Run):
            return self._run(frame)
        if isinstance(frame, frames.ChunkWant):
            if self.wants_waiting >= MAX_WANTS:
                return self._close(Refusal.FLOOD, f"more than {MAX_WANTS} wants waiting")
            self.wants_waiting += 1
            return [ServeChunks(frame.names)]
        if isinstance(frame, frames.Chunk):
            if frame.name not in self.chunks_asked:
                return self._close(Refusal.UNASKED_CHUNK, f"chunk {frame.name[:12]} was not asked for")
            self.chunks_asked.discard(frame.name)
            self.info.chunk_bytes_in += len(frame.data or b"")
            return [ApplyChunk(frame.name, frame.data)]
        moved = frame.epoch != self.info.peer_epoch
        self.info.peer_vector = frame.vector
        self.info.peer_epoch = frame.epoch
        self.info.clock_offset_ms = frame.wall - now.wall
        self.info.bridge = frame.bridge
        return [CatchUp(), GenerateSync()] if moved else [CatchUp()]

    def _run(self, run: frames.Run) -> list[Action]:
        assert self.info is not None
        asked = self.asked.get(run.node)
        if asked is None or run.first != asked[0] or run.first + len(run.events) - 1 > asked[1]:
            return self._close(Refusal.UNASKED_RUN,
                               f"a run of {run.node[:12]} from {run.first} that was not asked for")
        self.asked[run.node] = (run.first + len(run.events), asked[1])
        self.info.run_events_in += len(run.events)
        self.info.run_bytes_in += sum(map(len, run.events))
        return [ApplyRun(run)]

    def _hello(self, hello: frames.Hello, now: Now) -> list[Action]:
        if hello.version != frames.PROTOCOL_VERSION:
            return self._close(Refusal.WRONG_VERSION,
                               f"hello of protocol version {hello.version}; this node speaks {frames.PROTOCOL_VERSION}")
        if hello.node == self.node:
            return self._close(Refusal.SELF, "connected to itself")
        if self.proven is not None and hello.node != self.proven:
            return self._close(Refusal.IMPOSTOR,
                               f"hello names {hello.node[:12]}, certificate {self.proven[:12]}")
        self.state = State.SYNCING
        self.info = LinkInfo(hello.node, hello.desk, self.address, self.outbound, connected_at=now.wall / 1000,
                             clock_offset_ms=hello.wall - now.wall, peer_vector=hello.vector,
                             peer_epoch=hello.epoch)
        self._tip_at = now.mono
        return [Linked(self.info), CatchUp(), GenerateSync()]

    def closed(self) -> list[Action]:
        """The WebSocket ended (the peer hung up, or this node closed it): not a refusal."""
        self.state = State.CLOSED
        return []

    # ---- outcomes of ApplySync
    def sync_applied(self, n_events: int) -> list[Action]:
        """Answer: Automerge's sync protocol is a conversation."""
        if self.state is not State.SYNCING:
            return []
        assert self.info is not None
        self.info.received_events += n_events
        return [GenerateSync()]

    def sync_refused(self, refused: Refused) -> list[Action]:
        """The log refused the message (and counted every refusal in it): the peer is dropped for the first."""
        if self.state is State.CLOSED:
            return []
        return self._close(refused.kind, refused.message, report=False)

    # ---- outcomes of ApplyRun
    def run_applied(self, run: frames.Run, n_events: int) -> list[Action]:
        """Kept. After the last run of what was asked, the plan may have more to want."""
        if self.state is not State.SYNCING:
            return []
        assert self.info is not None
        self.info.received_events += n_events
        if run.done:
            self.asked.pop(run.node, None)
            if n_events == 0:
                return []  # it had no more (its journal lags its tip): ask again at its next tip
            return [CatchUp(), GenerateSync()]  # more may be due, and the epoch may have moved with it
        return []

    # ---- the bulk path, our side
    def want(self, ranges: list[tuple[str, int, int]]) -> list[Action]:
        """Ask the peer for these ranges (from the catch-up plan)."""
        if self.state is not State.SYNCING or not ranges:
            return []
        for node, first, last in ranges:
            self.asked[node] = (first, last)
        return [Send(frames.encode(frames.Want(ranges)))]

    def run_frame(self, run: frames.Run) -> list[Action]:
        """One run we serve, framed."""
        if self.state is not State.SYNCING:
            return []
        assert self.info is not None
        self.info.run_events_out += len(run.events)
        self.info.run_bytes_out += sum(map(len, run.events))
        return [Send(frames.encode(run))]

    def ask_chunks(self, names: list[str]) -> list[Action]:
        """Ask the peer for these snapshot chunks (the fetcher's choice), unless too many are asked already."""
        names = [n for n in names if n not in self.chunks_asked][:frames.MAX_CHUNK_NAMES]
        if self.state is not State.SYNCING or not names or len(self.chunks_asked) + len(names) > MAX_CHUNKS_ASKED:
            return []
        self.chunks_asked.update(names)
        return [Send(frames.encode(frames.ChunkWant(names)))]

    def chunk_frame(self, name: str, data: bytes | None) -> list[Action]:
        """One chunk we serve, framed."""
        if self.state is not State.SYNCING:
            return []
        assert self.info is not None
        self.info.chunk_bytes_out += len(data or b"")
        return [Send(frames.encode(frames.Chunk(name, data)))]

    def served(self) -> None:
        """One of the peer's wants has been answered."""
        self.wants_waiting = max(0, self.wants_waiting - 1)

    # ---- the writer's side
    def local_change(self) -> list[Action]:
        """The document changed (a scan here, or events from another peer): they may be news to this peer."""
        return [GenerateSync()] if self.state is State.SYNCING else []

    def timer(self, now: Now) -> list[Action]:
        """Call at `deadline()`: the hello timeout, then the periodic tip."""
        if self.state is State.AWAIT_HELLO and self._hello_by is not None and now.mono >= self._hello_by:
            return self._close(Refusal.HELLO_TIMEOUT, f"no hello within {HELLO_TIMEOUT:.0f} s")
        if self.state is State.SYNCING and now.mono >= self._tip_at + TIP_EVERY:
            return [GenerateSync()]
        return []

    def deadline(self) -> float | None:
        """The monotonic time at which `timer` has something to do; None once closed (or before start)."""
        if self.state is State.AWAIT_HELLO:
            return self._hello_by
        if self.state is State.SYNCING:
            return self._tip_at + TIP_EVERY
        return None

    def sync_message(self, message: bytes, epoch: str = "") -> list[Action]:
        """One sync message of a write round (for the document of `epoch`), framed."""
        if self.state is not State.SYNCING:
            return []
        assert self.info is not None
        self.info.sync_bytes_out += len(message)
        return [Send(frames.encode(frames.Sync(message, epoch)))]

    def tip(self, vector: dict[str, int], bridge: dict[str, Any] | None, now: Now,
            epoch: EpochTag = FIRST_TAG) -> list[Action]:
        """The end of a write round: our tip goes when it changed or TIP_EVERY has passed."""
        if self.state is not State.SYNCING:
            return []
        current = (dict(vector), None if bridge is None else dict(bridge), epoch)
        if current == self._last_tip and now.mono - self._tip_at < TIP_EVERY:
            return []
        self._last_tip, self._tip_at = current, now.mono
        return [Send(frames.encode(frames.Tip(current[0], now.wall, current[1], epoch)))]

    def _close(self, reason: Refusal, detail: str, *, report: bool = True) -> list[Action]:
        self.state = State.CLOSED
        self.closed_for = reason
        return [Close(reason, detail, report and reason.counted)]
