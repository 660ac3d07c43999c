"""Why a node refuses what a peer sent: one enum, so that counters and decisions never parse messages.

Each kind's value is the key `/api/v1/status` counts it under (`refusals`), and stays stable: the UI, the
tests and operators' scripts read these keys. The message that goes with a refusal is for people only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Refusal(StrEnum):
    # the peer link (node/discovery/link_machine.py)
    GARBAGE = "garbage"  # not a frame (not msgpack, unknown type, a text message) or a sync Automerge cannot read
    WRONG_VERSION = "wrong_version"  # a hello of another protocol version
    NO_HELLO = "no_hello"  # the first frame was not a hello
    HELLO_TIMEOUT = "hello_timeout"  # no hello within HELLO_TIMEOUT
    UNEXPECTED_HELLO = "unexpected_hello"  # a second hello
    SELF = "self"  # the hello names this node: we dialled ourselves
    IMPOSTOR = "impostor"  # the hello names another node than the TLS certificate proved
    UNASKED_RUN = "unasked_run"  # a journal run outside what was asked, or out of order
    FLOOD = "flood"  # more `want`s waiting to be served than a link allows
    UNASKED_CHUNK = "unasked_chunk"  # a snapshot chunk that was not asked for
    BAD_CHUNK = "bad_chunk"  # a snapshot chunk whose bytes are not what its name says (fetched elsewhere)
    # what a sync message touched (node/crdt/verify.py, EventLog.receive_sync)
    BAD_SIGNATURE = "bad_signature"
    BROKEN_CHAIN = "broken_chain"  # an event whose `prev` is not the hash of its desk's previous event
    ALTERED_EVENT = "altered_event"  # a change to, or deletion of, an event this node holds
    UNKNOWN_NODE = "unknown_node"  # an event from a node without a record
    REVOKED_NODE = "revoked_node"  # an event written by a revoked desk after its revocation
    NOT_ADMIN = "not_admin"  # a revoke or away event from a desk that is not an admin
    NOT_A_MEMBER = "not_a_member"  # a node record (or its events) the cluster's CA does not vouch for
    BAD_NODE_RECORD = "bad_node_record"  # unreadable, deleted, badly signed or replaced by an older one
    MALFORMED = "malformed"  # an entry that is not an event where it sits, an unreadable envelope

    @property
    def counted(self) -> bool:
        """Whether /status counts it. Dialling ourselves is a configuration slip, not a peer misbehaving,
        and it recurs on every dial: logged, not counted."""
        return self is not Refusal.SELF


@dataclass(frozen=True)
class Refused:
    """One refusal: its kind decides and counts, its message tells people what it was."""

    kind: Refusal
    message: str

    def __str__(self) -> str:
        return self.message
