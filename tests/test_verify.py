"""What a peer may add: checked per entry, with one signature per hash-chained run of a desk's events."""

from __future__ import annotations

import msgpack

from node.crdt.event import Event
from node.crdt.records import record_key
from node.crdt.refusals import Refusal, Refused
from node.crdt.verify import verify_touched
from tests.factories import DUE, SimDesk


def entries(desk: SimDesk, events: list[Event]) -> dict[str, bytes]:
    out = {record_key(desk.node): desk.record().encode()}
    out.update({e.id: e.encode() for e in events})
    return out


def check(values: dict[str, bytes], known: dict[str, bytes] | None = None):
    known = known or {}
    return verify_touched(list(values), values.get, known.get, lambda node: None)


def test_a_whole_chain_is_accepted() -> None:
    desk = SimDesk()
    events = [desk.write("in_house_use", item=f"I{i}") for i in range(50)]
    verdict = check(entries(desk, events))
    assert verdict.ok and [e.id for e, _ in verdict.events] == [e.id for e in events]


def test_an_altered_event_inside_a_chain_is_refused_even_though_the_last_signature_is_good() -> None:
    desk = SimDesk()
    events = [desk.write("checkout", patron="P1", item=f"I{i}", due=DUE) for i in range(5)]
    values = entries(desk, events)
    obj = msgpack.unpackb(values[events[2].id])
    obj["body"]["patron"] = "P2"
    values[events[2].id] = msgpack.packb(obj, use_bin_type=True)
    verdict = check(values)
    assert not verdict.ok
    assert {r.kind for r in verdict.refusals} <= {Refusal.BROKEN_CHAIN, Refusal.BAD_SIGNATURE}
    assert any(r.kind is Refusal.BROKEN_CHAIN for r in verdict.refusals)
    accepted = {e.id for e, _ in verdict.events}
    assert events[2].id not in accepted and events[3].id not in accepted
    # (the receiver rolls the whole sync message back when the verdict is not ok: nothing is kept)


def test_a_run_continuing_a_known_event_must_chain_to_it() -> None:
    desk = SimDesk()
    events = [desk.write("in_house_use", item=f"I{i}") for i in range(4)]
    known = {events[0].id: events[0].encode(), events[1].id: events[1].encode()}
    rest = {e.id: e.encode() for e in events[2:]}
    verdict = verify_touched(list(rest), rest.get, known.get, lambda node: desk.record())
    assert verdict.ok and len(verdict.events) == 2
    forged_known = {events[0].id: events[0].encode(), events[1].id: events[0].encode()}
    verdict = verify_touched(list(rest), rest.get, forged_known.get, lambda node: desk.record())
    assert not verdict.ok


def test_an_event_whose_predecessor_is_missing_stands_on_its_own_signature() -> None:
    desk = SimDesk()
    events = [desk.write("in_house_use", item=f"I{i}") for i in range(3)]
    lone = {events[2].id: events[2].encode()}
    verdict = verify_touched(list(lone), lone.get, {}.get, lambda node: desk.record())
    assert verdict.ok and [e.id for e, _ in verdict.events] == [events[2].id]
    obj = msgpack.unpackb(lone[events[2].id])
    obj["body"]["item"] = "other"
    lone[events[2].id] = msgpack.packb(obj, use_bin_type=True)
    assert not verify_touched(list(lone), lone.get, {}.get, lambda node: desk.record()).ok


def test_events_of_a_node_without_a_record_are_refused() -> None:
    desk = SimDesk()
    event = desk.write("in_house_use", item="I1")
    values = {event.id: event.encode()}
    verdict = check(values)
    assert verdict.refusals == [Refused(Refusal.UNKNOWN_NODE, f"event {event.id} is signed by an unknown node")]


def _member(ca, desk: SimDesk, role: str = "desk") -> str:
    from node.trust.ca import issue_node_certificate
    from node.trust.certs import cert_pem

    return cert_pem(issue_node_certificate(ca, desk.ident.key.public_key(), desk.node, "Desk", role))


def test_a_member_certificate_found_good_is_still_refused_once_it_expires() -> None:
    """The policy keeps certificates it found good (a busy desk asks on every sync message), not past
    their expiry."""
    import datetime as dt

    from node.cluster import ClusterPolicy, Membership
    from node.trust.ca import create_ca
    from node.trust.certs import load_cert_pem

    ca = create_ca("Test library")
    desk = SimDesk()
    record = desk.record(cert=_member(ca, desk))
    expiry = load_cert_pem(record.cert).not_valid_after_utc
    now = [dt.datetime.now(dt.UTC)]
    policy = ClusterPolicy(Membership(ca.cluster_id, "Test library", "admin", ca.cert, ca.cert, ca),
                           now=lambda: now[0])
    assert policy.admit(record) is None and policy.admit(record) is None
    now[0] = expiry + dt.timedelta(seconds=1)
    reason = policy.admit(record)
    assert reason is not None and "expired" in reason
    forged = desk.record(cert=_member(create_ca("Another library"), desk))  # same node, another CA
    now[0] = expiry - dt.timedelta(days=1)
    assert "not a member" in (policy.admit(forged) or "")
    assert policy.admit(record) is None


def test_cluster_policy_admits_members_and_applies_revocations() -> None:
    from node.cluster import ClusterPolicy, Membership
    from node.trust.ca import create_ca

    ca = create_ca("Test library")
    admin, desk, stranger = SimDesk(), SimDesk(), SimDesk()
    membership = Membership(ca.cluster_id, "Test library", "admin", ca.cert, ca.cert, ca)
    policy = ClusterPolicy(membership)
    records = {d.node: d.record(cert=_member(ca, d, role)) for d, role in ((admin, "admin"), (desk, "desk"))}
    records[stranger.node] = stranger.record()  # self-signed, no certificate from the CA
    assert policy.admit(records[admin.node]) is None and policy.admit(records[desk.node]) is None
    assert "not a member" in policy.admit(records[stranger.node])

    early = [desk.write("in_house_use", item=f"I{i}") for i in range(3)]
    late = desk.write("in_house_use", item="after")
    # a revocation accepted up to seq 3: what the desk wrote while trusted stays, what follows is refused
    assert all(policy.refuse_event(e, records[desk.node], 3) is None for e in early)
    assert policy.refuse_event(late, records[desk.node], 3).kind is Refusal.REVOKED_NODE
    # only an admin desk may revoke
    by_desk = desk.write("revoke", node=admin.node, upto=0)
    by_admin = admin.write("revoke", node=desk.node, upto=3)
    refused = policy.refuse_event(by_desk, records[desk.node], None)
    assert refused.kind is Refusal.NOT_ADMIN and "only an admin" in refused.message
    assert policy.refuse_event(by_admin, records[admin.node], None) is None
