"""Finding peer desks on the LAN with mDNS (`_circmesh._tcp.local.`, zeroconf's asyncio API).

Nothing learnt from mDNS is trusted. Anyone on the LAN can publish any record, so this module only
reports *candidates*: a node id, an address and a port worth trying. The caller connects to them over
mutual TLS against the cluster CA, and only that handshake proves membership. The records therefore
carry no secrets and no personal data: a hash of the cluster id (to skip other clusters' desks cheaply,
not to authenticate), the node id, the protocol version, the peer port and an optional short desk name.

Records are still validated strictly, because they come from the network: anything malformed, from
another cluster, or pointing outside the allowed networks is ignored and counted, never raised.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import inspect
import ipaddress
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import ifaddr
from zeroconf import InterfaceChoice, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from node.tasks import reap

_T = TypeVar("_T")

log = logging.getLogger(__name__)

SERVICE_TYPE = "_circmesh._tcp.local."
PROTOCOL_VERSION = "1"
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
DESK_NAME_MAX = 32
# A flood of bogus records must not grow memory without bound (ignored ones are evicted first).
MAX_TRACKED_RECORDS = 1024
# Records replaced by a newer version stay in caches for one more second (RFC 6762 §10.2).
FLUSH_GRACE_S = 1.2

# Reasons a record is ignored; each has a counter `ignored_<reason>`.
OWN = "own"
FOREIGN_CLUSTER = "foreign_cluster"
MALFORMED = "malformed"
UNSUPPORTED_VERSION = "unsupported_version"
WRONG_ADDRESS = "wrong_address"
REASONS = (OWN, FOREIGN_CLUSTER, MALFORMED, UNSUPPORTED_VERSION, WRONG_ADDRESS)

_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_VERSION = re.compile(r"[0-9]{1,3}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
OnFound = Callable[["Peer"], Awaitable[None] | None]
OnLost = Callable[[str], Awaitable[None] | None]


@dataclass(frozen=True)
class Peer:
    """A candidate peer as announced; unproven until the mutual-TLS handshake succeeds."""

    node_id: str
    host: str
    port: int
    desk: str | None = None


@dataclass(frozen=True)
class Ignored:
    """Why a record was not reported (one of REASONS) and a short detail for the log."""

    reason: str
    detail: str


def cluster_hash(cluster_id: str) -> str:
    """What goes into the `c` field: enough to tell clusters apart, without revealing the cluster id."""
    return hashlib.sha256(cluster_id.encode("utf-8")).hexdigest()[:16]


def instance_name(node_id: str) -> str:
    """The service instance name of a node (short, stable, derived from its id)."""
    return f"circmesh-{node_id[:12]}.{SERVICE_TYPE}"


def host_name(node_id: str) -> str:
    return f"circmesh-{node_id[:12]}.local."


def parse_networks(networks: Iterable[str | Network] | None) -> tuple[Network, ...] | None:
    """Turn `["10.0.0.0/8", ...]` into networks; None means "any address"."""
    if networks is None:
        return None
    return tuple(ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in networks)


def _text(properties: Mapping[bytes, bytes | None], key: bytes, pattern: re.Pattern[str]) -> str | None:
    value = properties.get(key)
    if value is None:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if pattern.fullmatch(text) else None


def _desk(properties: Mapping[bytes, bytes | None]) -> tuple[bool, str | None]:
    """(well-formed, desk name): the field is optional, but when present it must be short and printable."""
    if b"d" not in properties:
        return True, None
    raw = properties[b"d"]
    if raw is None:
        return False, None
    try:
        desk = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False, None
    if not 0 < len(desk) <= DESK_NAME_MAX or not desk.isprintable():
        return False, None
    return True, desk


def _pick_address(addresses: Sequence[str], allowed: tuple[Network, ...] | None) -> str | None:
    """The first usable address (IPv4 first), or None when no address is acceptable."""
    usable: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.is_unspecified or address.is_multicast or address.is_reserved:
            continue
        if allowed is not None and not any(address in net for net in allowed):
            continue
        usable.append(address)
    if not usable:
        return None
    usable.sort(key=lambda a: a.version)
    return str(usable[0])


def check_record(
    name: str,
    properties: Mapping[bytes, bytes | None],
    srv_port: int | None,
    addresses: Sequence[str],
    *,
    cluster: str,
    own_node_id: str | None = None,
    allowed_networks: tuple[Network, ...] | None = None,
) -> Peer | Ignored:
    """Judge one resolved record: a Peer worth trying, or why it is ignored.

    `cluster` is our cluster hash. The cluster is checked before the rest so that other clusters'
    desks (perhaps speaking a newer version) count as foreign, not as malformed.
    """
    c = _text(properties, b"c", _HEX16)
    if c is None:
        return Ignored(MALFORMED, "missing or bad cluster hash")
    if c != cluster:
        return Ignored(FOREIGN_CLUSTER, f"cluster {c}")
    v = _text(properties, b"v", _VERSION)
    if v is None:
        return Ignored(MALFORMED, "missing or bad version")
    if v not in SUPPORTED_VERSIONS:
        return Ignored(UNSUPPORTED_VERSION, f"version {v}")
    node_id = _text(properties, b"n", _HEX32)
    if node_id is None:
        return Ignored(MALFORMED, "missing or bad node id")
    p = _text(properties, b"p", _PORT)
    port = int(p) if p is not None else 0
    if not 1 <= port <= 65535:
        return Ignored(MALFORMED, "missing or bad port")
    if srv_port != port:
        return Ignored(MALFORMED, f"SRV port {srv_port} differs from TXT port {port}")
    desk_ok, desk = _desk(properties)
    if not desk_ok:
        return Ignored(MALFORMED, "bad desk name")
    if name.lower() != instance_name(node_id).lower():
        return Ignored(MALFORMED, "instance name does not match node id")
    if node_id == own_node_id:
        return Ignored(OWN, "our own record")
    host = _pick_address(addresses, allowed_networks)
    if host is None:
        return Ignored(WRONG_ADDRESS, f"no acceptable address in {list(addresses)[:4]}")
    return Peer(node_id=node_id, host=host, port=port, desk=desk)


def record_properties(node_id: str, cluster_id: str, port: int, desk: str | None = None) -> dict[str, str]:
    """The TXT fields a node publishes: facts peers need to try it, nothing secret or personal."""
    properties = {"c": cluster_hash(cluster_id), "n": node_id, "v": PROTOCOL_VERSION, "p": str(port)}
    if desk:
        properties["d"] = desk
    return properties


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses outside loopback: what a desk advertises by default."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                found.append(ip.ip)
    return sorted(set(found))


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")


def _check_desk(desk: str | None) -> None:
    if desk is not None and (not 0 < len(desk) <= DESK_NAME_MAX or not desk.isprintable()):
        raise ValueError(f"desk name must be 1–{DESK_NAME_MAX} printable characters")


def _check_own(node_id: str, cluster_id: str, port: int, desk: str | None) -> None:
    """Our own settings are checked as strictly as others' records: a bad one is a setup error."""
    if not _HEX32.fullmatch(node_id):
        raise ValueError("node id must be 32 lowercase hex digits")
    if not cluster_id:
        raise ValueError("cluster id must not be empty")
    _check_port(port)
    _check_desk(desk)


def _check_addresses(addresses: Sequence[str]) -> list[str]:
    if not addresses:
        raise ValueError("nothing to advertise: no address")
    for a in addresses:
        ipaddress.ip_address(a)  # ValueError for anything but an IP literal
    return list(addresses)


class Advertiser:
    """Publishes this node's record; `stop` sends goodbyes so peers forget it at once."""

    def __init__(
        self,
        zc: AsyncZeroconf,
        *,
        node_id: str,
        cluster_id: str,
        port: int,
        addresses: Sequence[str],
        desk: str | None = None,
        ttl: int = 120,
    ) -> None:
        _check_own(node_id, cluster_id, port, desk)
        self._zc = zc
        self.node_id = node_id
        self._cluster_id = cluster_id
        self.port = port
        self.desk = desk
        self.addresses = _check_addresses(addresses)
        self._ttl = ttl
        self._info: AsyncServiceInfo | None = None
        self._announced_at = 0.0

    def _make_info(self) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            instance_name(self.node_id),
            port=self.port,
            properties=record_properties(self.node_id, self._cluster_id, self.port, self.desk),
            server=host_name(self.node_id),
            host_ttl=self._ttl,
            parsed_addresses=self.addresses,
        )

    async def start(self) -> None:
        if self._info is not None:
            return
        info = self._make_info()
        # Probing and announcing take about 1.5 s; wait for them so peers can resolve us afterwards.
        await (await self._zc.async_register_service(info))
        self._info = info
        self._announced_at = asyncio.get_running_loop().time()

    async def update(
        self, *, port: int | None = None, desk: str | None = None, addresses: Sequence[str] | None = None
    ) -> None:
        """Re-announce with a new port, desk name or addresses; peers report us again."""
        if port is not None:
            _check_port(port)
            self.port = port
        if desk is not None:
            _check_desk(desk)
            self.desk = desk
        if addresses is not None:
            self.addresses = _check_addresses(addresses)
        if self._info is None:
            return
        # Peers replace cached records only if those arrived over a second before (RFC 6762 §10.2);
        # an update sent sooner would leave the old address beside the new one for a whole TTL.
        loop = asyncio.get_running_loop()
        wait = self._announced_at + FLUSH_GRACE_S - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        info = self._make_info()
        await (await self._zc.async_update_service(info))
        self._info = info
        self._announced_at = loop.time()

    async def stop(self) -> None:
        info, self._info = self._info, None
        if info is not None:
            await (await self._zc.async_unregister_service(info))


class _Record:
    """What the browser knows about one service name while it follows it."""

    __slots__ = ("dirty", "name", "peer", "removed", "task", "verdict")

    def __init__(self, name: str) -> None:
        self.name = name
        self.dirty = False
        self.removed = False
        self.task: asyncio.Task[None] | None = None
        self.peer: Peer | None = None
        self.verdict: str | None = None


class Browser:
    """Follows `_circmesh._tcp` records and reports the valid ones of our cluster.

    Each service name is handled by at most one task at a time, so the callbacks for one peer never
    overlap or run out of order. A peer is forgotten when its record is withdrawn (goodbye or PTR
    expiry), or when its address records have expired and it no longer answers a query (a desk switched
    off without a goodbye): known peers are re-checked every `refresh_s` seconds.
    """

    def __init__(
        self,
        zc: AsyncZeroconf,
        *,
        cluster_id: str,
        on_found: OnFound,
        on_lost: OnLost,
        own_node_id: str | None = None,
        allowed_networks: Iterable[str | Network] | None = None,
        refresh_s: float = 10.0,
        resolve_timeout_s: float = 3.0,
    ) -> None:
        self._zc = zc
        self._cluster = cluster_hash(cluster_id)
        self._on_found = on_found
        self._on_lost = on_lost
        self._own = own_node_id
        self._allowed = parse_networks(allowed_networks)
        self._refresh_s = refresh_s
        self._resolve_ms = int(resolve_timeout_s * 1000)
        self._records: dict[str, _Record] = {}
        self._browser: AsyncServiceBrowser | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.counters: dict[str, int] = {
            "found": 0,
            "lost": 0,
            "unresolved": 0,
            "callback_errors": 0,
            "overflow": 0,
            **{f"ignored_{r}": 0 for r in REASONS},
        }

    @property
    def peers(self) -> dict[str, Peer]:
        """The candidates reported and not yet lost, by node id."""
        return {r.peer.node_id: r.peer for r in self._records.values() if r.peer is not None}

    @property
    def ignored(self) -> dict[str, str]:
        """The records being ignored now, by service name, with the reason (for diagnosis)."""
        return {r.name: r.verdict for r in self._records.values() if r.verdict and r.peer is None}

    async def start(self) -> None:
        if self._browser is not None:
            return
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        self._sweeper = asyncio.create_task(self._sweep(), name="mdns-sweep")

    async def stop(self) -> None:
        """Stop browsing; no callback runs after this returns."""
        browser, self._browser = self._browser, None
        if browser is None:
            return
        await browser.async_cancel()
        await reap(self._sweeper, *(r.task for r in self._records.values()))
        self._sweeper = None
        self._records.clear()

    # zeroconf calls this in the event loop; it must not block, so it only marks work to do.
    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        key = name.lower()  # DNS names are case-insensitive: one record, however it is spelt
        record = self._records.get(key)
        if record is None:
            if state_change is ServiceStateChange.Removed:
                return
            if len(self._records) >= MAX_TRACKED_RECORDS and not self._evict_one():
                self.counters["overflow"] += 1
                return
            record = self._records[key] = _Record(name)
        record.removed = state_change is ServiceStateChange.Removed
        self._kick(key, record)
        if state_change is ServiceStateChange.Updated:
            # A changed record flushes the old one from caches only after a second (RFC 6762 §10.2):
            # look again once it is gone, or a moved peer would keep its old address.
            asyncio.get_running_loop().call_later(FLUSH_GRACE_S, self._recheck, key, record)

    def _evict_one(self) -> bool:
        """Make room by forgetting one ignored record, so a flood of bogus ones cannot hide real desks."""
        for key, record in self._records.items():
            if record.peer is None and record.task is None:
                del self._records[key]
                return True
        return False

    def _recheck(self, key: str, record: _Record) -> None:
        if self._records.get(key) is record and not record.removed:
            self._kick(key, record)

    def _kick(self, key: str, record: _Record) -> None:
        record.dirty = True
        if record.task is None and self._browser is not None:
            record.task = asyncio.create_task(self._follow(key, record), name=f"mdns {key}")

    async def _follow(self, key: str, record: _Record) -> None:
        try:
            while record.dirty:
                record.dirty = False
                if record.removed:
                    await self._forget(record)
                    continue
                verdict = await self._resolve(record.name)
                if record.dirty:
                    continue  # newer news arrived while resolving: judge that instead
                await self._apply(record, verdict)
        except Exception:  # a bug here must not stop the browser
            log.exception("mDNS: following %s failed", record.name)
        finally:
            record.task = None
        if record.removed and self._records.get(key) is record:
            del self._records[key]

    async def _resolve(self, name: str) -> Peer | Ignored | None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        zc = self._zc.zeroconf
        # Fresh records come from the cache; expired or missing ones make it ask the network.
        if not info.load_from_cache(zc) and not await info.async_request(zc, self._resolve_ms):
            return None
        return check_record(
            name,
            info.properties,
            info.port,
            info.parsed_scoped_addresses(),
            cluster=self._cluster,
            own_node_id=self._own,
            allowed_networks=self._allowed,
        )

    async def _apply(self, record: _Record, verdict: Peer | Ignored | None) -> None:
        if isinstance(verdict, Peer):
            record.verdict = None
            if verdict != record.peer:
                if record.peer is not None and record.peer.node_id != verdict.node_id:
                    await self._forget(record)
                record.peer = verdict
                self.counters["found"] += 1
                await self._call(self._on_found, verdict)
            return
        if verdict is None:
            # Gone without a goodbye (or never answered). Drop the record: if the desk comes back,
            # its fresh address records make zeroconf report it again.
            self.counters["unresolved"] += 1
            record.removed = True
        elif record.verdict != verdict.reason:  # count a record once per reason, not at every update
            record.verdict = verdict.reason
            self.counters[f"ignored_{verdict.reason}"] += 1
            log.info("mDNS: ignored %s (%s): %s", record.name, verdict.reason, verdict.detail)
        await self._forget(record)

    async def _forget(self, record: _Record) -> None:
        peer, record.peer = record.peer, None
        if peer is None:
            return
        if any(r.peer is not None and r.peer.node_id == peer.node_id for r in self._records.values()):
            return  # another record still names that node
        self.counters["lost"] += 1
        await self._call(self._on_lost, peer.node_id)

    async def _call(self, callback: Callable[[_T], Awaitable[None] | None], arg: _T) -> None:
        try:
            result = callback(arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("mDNS: discovery callback %r failed", callback)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            for key, record in list(self._records.items()):
                # A record already being looked at needs no extra look (and marking it dirty would
                # throw away the answer it is waiting for).
                if record.peer is not None and not record.removed and record.task is None:
                    self._kick(key, record)


class Discovery:
    """One node's mDNS presence: its advertisement and its browser, sharing one AsyncZeroconf.

    `interfaces` lists the IPs to use (tests and the demo pass `["127.0.0.1"]`); None means every LAN
    interface (zeroconf's default), advertising this machine's non-loopback IPv4 addresses.
    """

    def __init__(
        self,
        *,
        node_id: str,
        cluster_id: str,
        port: int,
        on_found: OnFound,
        on_lost: OnLost,
        interfaces: list[str] | None = None,
        desk: str | None = None,
        allowed_networks: Iterable[str | Network] | None = None,
        ttl: int = 120,
        refresh_s: float = 10.0,
        resolve_timeout_s: float = 3.0,
    ) -> None:
        _check_own(node_id, cluster_id, port, desk)
        if interfaces is not None:
            _check_addresses(interfaces)
        self.node_id = node_id
        self._cluster_id = cluster_id
        self._port = port
        self._desk = desk
        self._interfaces = interfaces
        self._ttl = ttl
        self._on_found = on_found
        self._on_lost = on_lost
        self._allowed = allowed_networks
        self._refresh_s = refresh_s
        self._resolve_timeout_s = resolve_timeout_s
        self._zc: AsyncZeroconf | None = None
        self._advertiser: Advertiser | None = None
        self._browser: Browser | None = None
        self._last_counters: dict[str, int] = {}

    @property
    def counters(self) -> dict[str, int]:
        """For /status: found, lost, unresolved, callback_errors, overflow and ignored_<reason>."""
        return dict(self._browser.counters) if self._browser is not None else dict(self._last_counters)

    @property
    def peers(self) -> dict[str, Peer]:
        return self._browser.peers if self._browser is not None else {}

    @property
    def ignored(self) -> dict[str, str]:
        return self._browser.ignored if self._browser is not None else {}

    async def start(self) -> None:
        if self._zc is not None:
            return
        if self._interfaces is None:
            zc = AsyncZeroconf(interfaces=InterfaceChoice.All)
            addresses = lan_addresses()
        else:
            zc = AsyncZeroconf(interfaces=list(self._interfaces))
            addresses = list(self._interfaces)
        self._zc = zc
        try:
            self._browser = Browser(
                zc,
                cluster_id=self._cluster_id,
                on_found=self._on_found,
                on_lost=self._on_lost,
                own_node_id=self.node_id,
                allowed_networks=self._allowed,
                refresh_s=self._refresh_s,
                resolve_timeout_s=self._resolve_timeout_s,
            )
            await self._browser.start()
            self._advertiser = Advertiser(
                zc,
                node_id=self.node_id,
                cluster_id=self._cluster_id,
                port=self._port,
                addresses=addresses,
                desk=self._desk,
                ttl=self._ttl,
            )
            await self._advertiser.start()
        except BaseException:
            await self.stop()
            raise

    async def update(self, *, port: int | None = None, desk: str | None = None) -> None:
        """Announce a new peer port or desk name."""
        if port is not None:
            _check_port(port)
            self._port = port
        if desk is not None:
            _check_desk(desk)
            self._desk = desk
        if self._advertiser is not None:
            await self._advertiser.update(port=port, desk=desk)

    async def stop(self) -> None:
        """Say goodbye (peers see us go at once), stop browsing, release the sockets."""
        zc, self._zc = self._zc, None
        if zc is None:
            return
        advertiser, self._advertiser = self._advertiser, None
        browser, self._browser = self._browser, None
        try:
            if advertiser is not None:
                await advertiser.stop()
            if browser is not None:
                self._last_counters = dict(browser.counters)
                await browser.stop()
        finally:
            await zc.async_close()


async def _watch(args: argparse.Namespace) -> None:
    """Advertise and print each peer found or lost as one JSON line, for a bounded time."""

    def emit(event: str, **fields: object) -> None:
        print(json.dumps({"event": event, **fields}), flush=True)

    async def found(peer: Peer) -> None:
        emit("found", node_id=peer.node_id, host=peer.host, port=peer.port, desk=peer.desk)

    async def lost(node_id: str) -> None:
        emit("lost", node_id=node_id)

    discovery = Discovery(
        node_id=args.node_id or secrets.token_hex(16),
        cluster_id=args.cluster,
        port=args.port,
        on_found=found,
        on_lost=lost,
        interfaces=args.interface or None,
        desk=args.desk,
        allowed_networks=args.allow or None,
        ttl=args.ttl,
        refresh_s=args.refresh,
    )
    await discovery.start()
    emit("started", node_id=discovery.node_id)
    try:
        await asyncio.sleep(args.seconds)
    finally:
        emit("counters", **discovery.counters)
        await discovery.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m node.discovery.mdns`: a probe for checking discovery on a real or virtual LAN."""
    parser = argparse.ArgumentParser(prog="python -m node.discovery.mdns", description=main.__doc__)
    parser.add_argument("--cluster", required=True, help="cluster id (only its hash is published)")
    parser.add_argument("--port", type=int, required=True, help="peer port to advertise")
    parser.add_argument("--node-id", help="32 hex digits (default: random)")
    parser.add_argument("--interface", action="append", help="IP to use; repeat; default: all LAN")
    parser.add_argument("--allow", action="append", help="network peers must be in, e.g. 10.0.0.0/8")
    parser.add_argument("--desk", help="desk name to publish")
    parser.add_argument("--ttl", type=int, default=120, help="TTL of the address records, seconds")
    parser.add_argument("--refresh", type=float, default=10.0, help="seconds between liveness checks")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watch(args))


if __name__ == "__main__":
    main()
