"""Drop-reason names, taken from the running kernel.

The numbers behind ``enum skb_drop_reason`` change between kernels (NO_SOCKET is
2 on 6.1 and 3 on 6.18), so names always come from the kernel being traced:
the ``__print_symbolic`` table of ``skb:kfree_skb``'s format file (the tracer
needs that file anyway, so there is no other source to fall back on). The short
meanings below are kdbg's own documentation for the common reasons; they carry
no numbers.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

from kdbg.errors import ProbeUnavailable, UnknownReason
from kdbg.symbols.tpformat import TpFormat

PREFIX = "SKB_DROP_REASON_"

MEANINGS: dict[str, str] = {
    "NOT_SPECIFIED": "dropped with no reason given (a plain kfree_skb())",
    "NO_SOCKET": "no socket listens on the destination port",
    "SOCKET_FILTER": "a socket filter (SO_ATTACH_FILTER/BPF) rejected it",
    "SOCKET_RCVBUFF": "the socket's receive buffer was full",
    "PKT_TOO_SMALL": "shorter than its headers claim",
    "TCP_CSUM": "bad TCP checksum",
    "UDP_CSUM": "bad UDP checksum",
    "NETFILTER_DROP": "a netfilter rule (iptables/nftables) dropped it",
    "OTHERHOST": "addressed to another host's MAC (promiscuous receive)",
    "IP_CSUM": "bad IPv4 header checksum",
    "IP_INHDR": "malformed IP header",
    "IP_RPFILTER": "reverse-path filter (rp_filter) rejected the source",
    "IP_NOPROTO": "no handler for the IP protocol number",
    "IP_OUTNOROUTES": "no route for an outgoing packet",
    "IP_INNOROUTES": "no route for an incoming packet",
    "PROTO_MEM": "protocol memory limit reached",
    "TCP_FLAGS": "invalid TCP flag combination",
    "TCP_OLD_DATA": "TCP data entirely before the receive window",
    "TCP_OVERWINDOW": "TCP data beyond the receive window",
    "TCP_RESET": "TCP RST received",
    "TCP_INVALID_SYN": "unexpected SYN on an existing connection",
    "TCP_CLOSE": "TCP segment for a closed connection",
    "TCP_LISTEN_OVERFLOW": "the listen queue was full",
    "SOCKET_BACKLOG": "the socket's backlog was full",
    "NEIGH_FAILED": "neighbour (ARP/NDISC) resolution failed",
    "NEIGH_QUEUEFULL": "too many packets queued waiting for a neighbour",
    "QDISC_DROP": "the queueing discipline dropped it",
    "CPU_BACKLOG": "the per-CPU receive backlog was full (netdev_max_backlog)",
    "XDP": "an XDP program dropped it",
    "TC_INGRESS": "a tc ingress filter dropped it",
    "TC_EGRESS": "a tc egress filter dropped it",
    "UNHANDLED_PROTO": "no handler for the L3 protocol",
    "DEV_READY": "the device was not up",
    "FULL_RING": "the device's ring was full",
    "NOMEM": "out of memory",
    "HDR_TRUNC": "truncated header",
    "ICMP_CSUM": "bad ICMP checksum",
    "IP_LOCAL_SOURCE": "source address is local (spoofed or looped)",
    "IP_INVALID_SOURCE": "invalid source address",
    "PKT_TOO_BIG": "larger than the MTU, and may not be fragmented",
    "IPV6DISABLED": "IPv6 is disabled on the device",
    "SECURITY_HOOK": "an LSM hook dropped it",
}


@dataclass(frozen=True)
class Reason:
    code: int
    name: str

    @property
    def meaning(self) -> str:
        return MEANINGS.get(self.name, "")


class ReasonTable:
    """The kernel's drop reasons: code ↔ name, and lenient name lookup."""

    def __init__(self, table: dict[int, str], source: str) -> None:
        self._by_code = dict(sorted(table.items()))
        self._by_name = {name: code for code, name in self._by_code.items()}
        self.source = source

    @classmethod
    def from_tpformat(cls, fmt: TpFormat) -> ReasonTable:
        """Names as the tracepoint prints them; ProbeUnavailable before Linux 5.17."""
        if "reason" not in fmt.fields:
            raise ProbeUnavailable(
                "skb:kfree_skb has no reason field: this kernel predates drop reasons (5.17)",
                hint="upgrade the kernel; bcc's tcpdrop or dropwatch still show locations",
            )
        table = fmt.symbolic("reason")
        if not table:
            raise ProbeUnavailable("skb:kfree_skb's format has no reason names")
        return cls(table, "tracefs skb:kfree_skb format")

    def __iter__(self) -> Iterator[Reason]:
        return (Reason(c, n) for c, n in self._by_code.items())

    def __len__(self) -> int:
        return len(self._by_code)

    def name(self, code: int) -> str:
        """Name of ``code``; unknown codes (subsystem reasons) print as ``REASON_0x…``."""
        return self._by_code.get(code, f"REASON_0x{code:x}")

    def code(self, name: str) -> int:
        """Code for ``NETFILTER_DROP``, ``netfilter_drop`` or ``SKB_DROP_REASON_NETFILTER_DROP``."""
        key = name.strip().upper()
        if key.startswith(PREFIX):
            key = key[len(PREFIX):]
        if key in self._by_name:
            return self._by_name[key]
        close = difflib.get_close_matches(key, list(self._by_name), n=3, cutoff=0.5)
        hint = ("closest: " + ", ".join(close)) if close else "see 'kdbg reasons'"
        raise UnknownReason(f"unknown drop reason {name!r} on this kernel", hint=hint)
