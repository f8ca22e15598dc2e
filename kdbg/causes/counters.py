"""A namespace's SNMP and netstat counters, and the one table of which counters the
kernel bumps together with each drop reason.

The counters are read inside the namespace (``/proc/net/snmp``, ``/proc/net/netstat``,
``/proc/net/snmp6`` are per namespace) and named as ``nstat`` names them: the line's
prefix and the field (``Udp`` + ``RcvbufErrors`` is ``UdpRcvbufErrors``,
``TcpExt`` + ``TCPZeroWindowDrop`` is ``TcpExtTCPZeroWindowDrop``); snmp6 already
uses such names. Each :class:`Link` names the kernel function that frees the packet
with the reason and bumps the counters on the same path (docs/diagnose.md lists them).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kdbg.causes import netnsref
from kdbg.causes.netnsref import NetnsRef
from kdbg.causes.reads import read_files
from kdbg.errors import KdbgError

FILES = ("/proc/net/snmp", "/proc/net/netstat", "/proc/net/snmp6")


@dataclass(frozen=True)
class Link:
    """``reason``'s drops bump ``counters`` (nstat names) in ``source``, the kernel
    function(s) that free the packet with that reason."""

    reason: str
    counters: tuple[str, ...]
    source: str


_UDP_ERR = ("UdpInErrors", "Udp6InErrors")

LINKS: tuple[Link, ...] = (
    Link("SOCKET_RCVBUFF", ("UdpRcvbufErrors", "Udp6RcvbufErrors", *_UDP_ERR),
         "__udp_queue_rcv_skb (net/ipv4/udp.c), __udpv6_queue_rcv_skb (net/ipv6/udp.c): "
         "the socket's queue refused it with -ENOMEM"),
    Link("PROTO_MEM", ("UdpMemErrors", "Udp6MemErrors", *_UDP_ERR, "TcpExtTCPRcvQDrop"),
         "__udp_queue_rcv_skb, __udpv6_queue_rcv_skb (the protocol's memory limit); "
         "tcp_data_queue (net/ipv4/tcp_input.c), receive queue over its memory"),
    Link("SOCKET_FILTER", _UDP_ERR,
         "udp_queue_rcv_one_skb (net/ipv4/udp.c), udpv6_queue_rcv_one_skb "
         "(net/ipv6/udp.c): the socket's filter refused it"),
    Link("NO_SOCKET", ("UdpNoPorts", "Udp6NoPorts"),
         "__udp4_lib_rcv (net/ipv4/udp.c), __udp6_lib_rcv (net/ipv6/udp.c): no socket, "
         "port unreachable sent"),
    Link("UDP_CSUM", ("UdpInCsumErrors", "Udp6InCsumErrors", *_UDP_ERR),
         "__udp4_lib_rcv, __udp6_lib_rcv and the per-socket receive (csum_error: then drop)"),
    Link("PKT_TOO_SMALL", (*_UDP_ERR, "IpExtInTruncatedPkts", "Ip6InTruncatedPkts"),
         "__udp4_lib_rcv, __udp6_lib_rcv (short_packet: then drop); ip_rcv_core "
         "(net/ipv4/ip_input.c), ipv6_rcv's ip6_rcv_core (net/ipv6/ip6_input.c): "
         "shorter than its IP header says"),
    Link("TCP_CSUM", ("TcpInCsumErrors", "TcpInErrs"),
         "tcp_v4_rcv (net/ipv4/tcp_ipv4.c), tcp_v6_rcv (net/ipv6/tcp_ipv6.c): csum_error"),
    Link("TCP_ZEROWINDOW", ("TcpExtTCPZeroWindowDrop",),
         "tcp_data_queue (net/ipv4/tcp_input.c): data into a zero receive window"),
    Link("SOCKET_BACKLOG", ("TcpExtTCPBacklogDrop",),
         "tcp_add_backlog (net/ipv4/tcp_ipv4.c): the socket's backlog is full"),
    Link("IP_RPFILTER", ("TcpExtIPReversePathFilter",),
         "ip_rcv_finish_core (net/ipv4/ip_input.c): drop_error, route lookup said -EXDEV"),
    Link("IP_NOPROTO", ("IpInUnknownProtos", "Ip6InUnknownProtos"),
         "ip_protocol_deliver_rcu (net/ipv4/ip_input.c), ip6_protocol_deliver_rcu "
         "(net/ipv6/ip6_input.c): no handler for the protocol"),
    Link("IP_INHDR", ("IpInHdrErrors", "Ip6InHdrErrors"),
         "ip_rcv_core (net/ipv4/ip_input.c), ip6_rcv_core (net/ipv6/ip6_input.c): "
         "inhdr_error"),
)

BY_REASON: dict[str, Link] = {link.reason: link for link in LINKS}


def linked(reason: str) -> tuple[str, ...]:
    """The counters the kernel bumps with ``reason``'s drops (none: not in the table)."""
    link = BY_REASON.get(reason)
    return link.counters if link else ()


def parse(texts: Mapping[str, str | None]) -> dict[str, int]:
    """Counters by nstat name from the text of ``FILES`` (path -> text; None: unread).

    snmp and netstat come in line pairs, ``Prefix: names`` then ``Prefix: values``;
    snmp6 has one ``Name value`` a line.
    """
    out: dict[str, int] = {}
    for text in texts.values():
        rows = [line.split() for line in (text or "").splitlines() if line.strip()]
        if rows and rows[0][0].endswith(":"):
            for names, values in zip(rows[::2], rows[1::2], strict=False):
                prefix = names[0][:-1]
                if values[0] != names[0]:
                    raise KdbgError(f"unexpected SNMP counter lines: {names[0]} then {values[0]}")
                out.update((prefix + n, int(v)) for n, v in zip(names[1:], values[1:],
                                                                strict=True))
        else:
            out.update((row[0], int(row[1])) for row in rows if len(row) == 2)
    return out


def snapshot(ns: NetnsRef) -> dict[str, int]:
    """Every counter of namespace ``ns`` now, by nstat name (KdbgError if it vanished)."""
    counters = parse(read_files(ns, FILES))
    if not counters:
        raise KdbgError(f"no SNMP counters readable in netns {ns.label}")
    return counters


def moved(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """The counters that changed from ``before`` to ``after``, by how much."""
    return {name: after[name] - before[name] for name in sorted(after)
            if name in before and after[name] != before[name]}


@dataclass(frozen=True)
class Beside:
    """A counter that moved in the drop's namespace and is linked to its reason;
    ``shared_with`` are the other reasons seen in that namespace linked to it too (its
    change counts their drops as well)."""

    name: str
    delta: int
    shared_with: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        rec: dict[str, object] = {"name": self.name, "moved": self.delta}
        if self.shared_with:
            rec["shared_with"] = list(self.shared_with)
        return rec

    def text(self) -> str:
        shared = f" (with {', '.join(self.shared_with)})" if self.shared_with else ""
        return f"{self.name} {self.delta:+,}{shared}"


def beside(reason: str, deltas: Mapping[str, int], seen: Iterable[str]) -> list[Beside]:
    """The counters linked to ``reason`` that moved (``deltas``), each with the other
    reasons in ``seen`` (the reasons dropped in the same namespace) linked to it."""
    others = sorted(set(seen) - {reason})
    return [Beside(name, deltas[name],
                   tuple(r for r in others if name in linked(r)))
            for name in linked(reason) if deltas.get(name)]


@dataclass
class NetnsCounters:
    """One namespace's counters before and after a run (None: not read; ``error`` says
    why)."""

    ref: NetnsRef
    before: dict[str, int] | None = None
    after: dict[str, int] | None = None
    error: str | None = None

    @property
    def deltas(self) -> dict[str, int]:
        if self.before is None or self.after is None:
            return {}
        return moved(self.before, self.after)

    def read(self, into: str) -> None:
        """Read the counters now into ``before`` or ``after``; a failure is kept in
        ``error`` (a namespace that vanished is not the run's failure)."""
        try:
            setattr(self, into, snapshot(self.ref))
        except KdbgError as err:
            self.error = str(err)


def namespaces(netns: int | None) -> list[NetnsCounters]:
    """The namespaces whose counters a run reads: ``netns`` alone when the run is
    filtered to it, else kdbg's own and every one named under /var/run/netns."""
    if netns is not None:
        inodes = [netns]
    else:
        inodes = [os.stat("/proc/self/ns/net").st_ino, *(ino for _, ino in netnsref.named())]
    out = []
    for ino in dict.fromkeys(inodes):
        try:
            out.append(NetnsCounters(netnsref.find(ino)))
        except KdbgError as err:
            out.append(NetnsCounters(NetnsRef(ino, ""), error=str(err)))
    return out
