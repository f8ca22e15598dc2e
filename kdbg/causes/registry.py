"""The causes kdbg finds, one entry per cause, keyed by reason.

An entry declares everything about its cause: the reasons it explains, the drop's
fields that decide it (with the reason and the namespace, its cache key: drops with
the same key share one answer), what of the drop's kernel stack decides it (only
then does the drop program take a stack for these reasons), and its finder. A new
cause is a finder here and its entry in :data:`REGISTRY`, and its reason's notes
in :mod:`kdbg.causes.notes`. A reason with no entry gets its notes alone.

A finder is handed the namespace reads it may share (:class:`NetnsReads`), the drop
and the cause so far (the reason's notes, the namespace), and returns the cause
with what it found; a read that fails ends in "cause not established" and why.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any

from kdbg.causes import netfilter, sockets
from kdbg.causes.reads import Drop, NetnsReads, oneline
from kdbg.errors import KdbgError
from kdbg.trace.cause import Cause, SocketRef
from kdbg.trace.event import DropEvent

FindFn = Callable[[NetnsReads, Drop, Cause], Cause]


@dataclass(frozen=True)
class Finder:
    """One cause: its reasons, the event fields of its key, what of the stack it reads
    (None: no stack) and how many of its frames, innermost first, that depends on (None
    from ``depth``: all of them), its finder, and whether the finder needs the drop's
    namespace found (False: it says itself what it cannot tell without one)."""

    reasons: tuple[str, ...]
    key: tuple[str, ...]
    find: FindFn
    stack: Callable[[Sequence[str | None]], Hashable] | None = None
    depth: Callable[[Sequence[str | None]], int | None] | None = None
    needs_netns: bool = True


# -- the finders that read facts: sockets, sysctls, routes ---------------------------

def no_socket(reads: NetnsReads, drop: Drop, cause: Cause) -> Cause:
    """NO_SOCKET: nothing takes packets on that port, or only another address does."""
    ev, ns = drop.event, drop.ns
    proto, port = ev.proto, ev.dport
    where = f"netns {ns.label}" if ns else "an unknown netns"
    if proto not in ("tcp", "udp") or port is None or ev.daddr is None or ns is None:
        return replace(cause, established=False, summary=(
            f"cause not established: no socket for a {proto or 'packet'} in {where}, "
            "but the drop lacks the protocol, address or port to say which"))
    endpoint = f"[{ev.daddr}]:{port}" if ev.family == "ipv6" else f"{ev.daddr}:{port}"
    socks = reads.read("sockets", ns, lambda: sockets.read(ns))
    same_port = [s for s in socks if s.proto == proto and s.port == port and s.receiving]
    takers = [s for s in same_port if ev.family and s.accepts(ev.family, ev.daddr)]
    cause = replace(cause, socket=SocketRef(proto, ev.family, str(ev.daddr), port, ev.netns),
                    listeners=tuple(s.listener() for s in same_port), established=not takers)
    verb = "listens" if proto == "tcp" else "is bound"
    text = f"no {proto} socket {verb} on {endpoint} in {where}"
    if takers:
        text += (f" at the drop, but one does now "
                 f"({', '.join(s.endpoint for s in takers)}): it started after the drop")
    elif same_port:
        others = ", ".join(f"{s.proto} {s.endpoint}" for s in same_port)
        text += f"; on port {port} there is only {others} (another address or family)"
    else:
        text += f"; nothing {verb} on port {port} in that netns"
    return replace(cause, summary=text)


def socket_queue(reads: NetnsReads, drop: Drop, cause: Cause) -> Cause:
    """A full socket queue: what waits in the sockets on the port, and the limits."""
    ev, ns = drop.event, drop.ns
    assert ns is not None
    # Queues move fast: not the read NO_SOCKET causes share, a read of its own.
    socks = reads.read(f"queues {ev.proto} {ev.dport}", ns, lambda: sockets.read(ns))
    mine = [s for s in socks if s.proto == ev.proto and s.port == ev.dport and s.receiving]
    facts = reads.sysctls(ns, ["net.core.rmem_default", "net.core.rmem_max",
                               "net.core.somaxconn"], "sysctl rmem")
    cause = replace(cause, facts=tuple(facts.items()),
                    listeners=tuple(s.listener() for s in mine))
    if not mine:
        return cause
    if ev.reason == "TCP_LISTEN_OVERFLOW":
        queues = "; ".join(f"tcp {s.endpoint}: {s.rx_queue} connections waiting for accept()"
                           for s in mine)
        text = f"{queues} (net.core.somaxconn = {facts['net.core.somaxconn']})"
    else:
        parts = []
        for s in mine:
            part = f"{s.proto} {s.endpoint}: {s.rx_queue} bytes queued"
            if s.drops is not None:
                part += f", {s.drops} drops counted by the socket"
            parts.append(part)
        text = "; ".join(parts) + (f" (net.core.rmem_default = {facts['net.core.rmem_default']},"
                                   f" rmem_max = {facts['net.core.rmem_max']})")
    return replace(cause, established=True, summary=text)


def rp_filter(reads: NetnsReads, drop: Drop, cause: Cause) -> Cause:
    """IP_RPFILTER: the rp_filter that applies to the device, and the route back."""
    ev, ns = drop.event, drop.ns
    assert ns is not None
    if not ev.ifname:
        return cause
    names = ["net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{ev.ifname}.rp_filter"]
    got = reads.sysctls(ns, names, f"rp_filter {ev.ifname}")
    facts: dict[str, str | int | None] = {**got}
    nums = [int(v) for v in got.values() if v is not None and v.isdigit()]
    if not nums:
        return replace(cause, facts=tuple(facts.items()))
    effective = max(nums)
    mode = {0: "off", 1: "strict", 2: "loose"}.get(effective, str(effective))
    facts["effective_rp_filter"] = effective
    route = None
    if ev.saddr is not None:
        try:
            route = reads.read(f"route {ev.saddr}", ns, lambda: oneline(
                ns.run(["ip", "-o", "route", "get", str(ev.saddr)])))
        except KdbgError as err:
            route = f"no route ({err})"
        facts["route_back"] = route
    text = (f"rp_filter is {effective} ({mode}) for {ev.ifname} "
            f"(all={got[names[0]]}, {ev.ifname}={got[names[1]]}, the higher applies)")
    if route is not None:
        text += f"; the route back to {ev.saddr}: {route}"
    return replace(cause, facts=tuple(facts.items()), established=effective > 0, summary=text)


def read_sysctls(names: Sequence[str], what: str) -> FindFn:
    """A finder that reads sysctls ``names`` and says their values (``what`` they are)."""
    def find(reads: NetnsReads, drop: Drop, cause: Cause) -> Cause:
        assert drop.ns is not None
        facts = reads.sysctls(drop.ns, names, "sysctl " + " ".join(names))
        return replace(cause, facts=tuple(facts.items()), summary=f"{what}: " + ", ".join(
            f"{n} = {v}" for n, v in facts.items()))
    return find


def ipv6_disabled(reads: NetnsReads, drop: Drop, cause: Cause) -> Cause:
    """IPV6DISABLED: the device's disable_ipv6."""
    ifname = drop.event.ifname
    if not ifname:
        return cause
    return read_sysctls([f"net.ipv6.conf.{ifname}.disable_ipv6"], "IPv6 on the device")(
        reads, drop, cause)


def route(reads: NetnsReads, drop: Drop, cause: Cause) -> Cause:
    """No route, or an address the route lookup refuses: what ``ip route get`` says."""
    ev, ns = drop.event, drop.ns
    assert ns is not None
    if ev.daddr is None:
        return cause
    argv = ["ip", "-o", "route", "get", str(ev.daddr)]
    if ev.reason != "IP_OUTNOROUTES" and ev.saddr is not None and ev.ifname:
        argv += ["from", str(ev.saddr), "iif", ev.ifname]
    try:
        found = reads.read("route " + " ".join(argv), ns, lambda: oneline(ns.run(argv)))
    except KdbgError as err:
        found = f"no route: {str(err).rsplit(': ', 1)[-1]}"
    return replace(cause, facts=(("route", found),), summary=f"the route for {ev.daddr}: {found}")


# -- the registry -----------------------------------------------------------------

ADDRESS = ("family", "proto", "daddr", "dport")
REGISTRY: tuple[Finder, ...] = (
    Finder(("NETFILTER_DROP",),
           ("symbol", "family", "proto", "saddr", "daddr", "sport", "dport", "icmp_type",
            "icmp_code", "ifname", "mark", "ct_state", "ct_reply", "ct_zone", "ct_mark",
            "ct_status", "ct_original", "ct_reply_tuple", "arp_op"),
           netfilter.find, stack=netfilter.stack_hook, depth=netfilter.hook_depth,
           needs_netns=False),
    Finder(("NO_SOCKET",), ADDRESS, no_socket, needs_netns=False),
    Finder(("SOCKET_RCVBUFF", "SOCKET_BACKLOG", "TCP_LISTEN_OVERFLOW"), ADDRESS, socket_queue),
    Finder(("IP_RPFILTER",), ("ifname", "saddr"), rp_filter),
    Finder(("CPU_BACKLOG",), ("ifname",),
           read_sysctls(["net.core.netdev_max_backlog"], "backlog limit")),
    Finder(("PROTO_MEM",), ("ifname",),
           read_sysctls(["net.ipv4.tcp_mem", "net.ipv4.udp_mem"], "protocol memory limits")),
    Finder(("IPV6DISABLED",), ("ifname",), ipv6_disabled),
    Finder(("IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS"), ("ifname",), route),
)
BY_REASON: dict[str, Finder] = {r: f for f in REGISTRY for r in f.reasons}
OTHER_KEY = ("ifname",)  # the key of a reason with no entry: its notes name the device


def _fields(names: tuple[str, ...]) -> Callable[[DropEvent], tuple[Any, ...]]:
    get = attrgetter(*names)
    return get if len(names) > 1 else lambda ev: (get(ev),)


# Each entry's key fields, read at once (the cache key is made for every drop).
KEY_FIELDS = {f: _fields(f.key) for f in REGISTRY}
OTHER_FIELDS = _fields(OTHER_KEY)


def finder_for(reason: str) -> Finder | None:
    """The entry for ``reason``, or None (its notes alone)."""
    return BY_REASON.get(reason)


def stack_reasons() -> frozenset[str]:
    """The reasons whose cause reads the drop's kernel stack: the drop program takes a
    stack for these only."""
    return frozenset(r for f in REGISTRY if f.stack is not None for r in f.reasons)


def stack_depth(reason: str, symbols: Sequence[str | None]) -> int | None:
    """How many of a ``reason`` drop's frames (innermost first, from the function that
    dropped) decide its cause: the drop program then checks only those for a learned
    call chain (kdbg.trace.chains). None: all of them (a stack walk each time)."""
    entry = BY_REASON.get(reason)
    if entry is None or entry.stack is None:
        return 0
    return entry.depth(symbols) if entry.depth is not None else None


def cache_key(ev: DropEvent, stack: Sequence[str | None] | None) -> tuple[Any, ...]:
    """The fields that decide ``ev``'s cause: the reason, the namespace, what of the
    stack the cause reads, and its entry's fields."""
    entry = BY_REASON.get(ev.reason)
    if entry is None:
        return (ev.reason, ev.netns, *OTHER_FIELDS(ev))
    if entry.stack is not None:
        told = entry.stack(stack) if stack is not None else None
        return (ev.reason, ev.netns, told, *KEY_FIELDS[entry](ev))
    return (ev.reason, ev.netns, *KEY_FIELDS[entry](ev))
