"""A conntrack entry's tuples, as the drop program copies them
(``nf_conn.tuplehash[IP_CT_DIR_ORIGINAL/REPLY].tuple``): the original direction's,
where the connection began before NAT rewrote the packet; the reply direction's, what
a reply looks like after NAT (a DNAT'd connection's reply comes from the new
destination)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from kdbg.trace.filters import PROTO_NAMES
from kdbg.trace.headers import IPAddress

NFPROTO_FAMILIES = {2: "ipv4", 10: "ipv6"}  # NFPROTO_IPV4, NFPROTO_IPV6
PORT_PROTOS = frozenset({6, 17, 33, 132, 136})  # tcp, udp, dccp, sctp, udplite
ICMP_PROTOS = frozenset({1, 58})


@dataclass(frozen=True)
class CtTuple:
    """The tuple's addresses, protocol and ports (ICMP: echo id, type and code)."""

    family: str
    l4proto: int
    saddr: IPAddress
    daddr: IPAddress
    sport: int | None = None
    dport: int | None = None
    icmp_id: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def proto(self) -> str:
        return PROTO_NAMES.get(self.l4proto, str(self.l4proto))

    def to_json(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"family": self.family, "proto": self.proto,
                               "saddr": str(self.saddr), "daddr": str(self.daddr)}
        for k in ("sport", "dport", "icmp_id", "icmp_type", "icmp_code"):
            if getattr(self, k) is not None:
                rec[k] = getattr(self, k)
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> CtTuple:
        l4 = next((n for n, name in PROTO_NAMES.items() if name == rec["proto"]), None)
        return cls(rec["family"], l4 if l4 is not None else int(rec["proto"]),
                   ipaddress.ip_address(rec["saddr"]), ipaddress.ip_address(rec["daddr"]),
                   rec.get("sport"), rec.get("dport"), rec.get("icmp_id"),
                   rec.get("icmp_type"), rec.get("icmp_code"))

    def __str__(self) -> str:
        if self.sport is not None:
            s, d = (f"[{a}]" if self.family == "ipv6" else str(a)
                    for a in (self.saddr, self.daddr))
            return f"{self.proto} {s}:{self.sport} -> {d}:{self.dport}"
        return f"{self.proto} {self.saddr} -> {self.daddr}"


def from_raw(raw: Any, prefix: str = "ct_orig_") -> CtTuple | None:
    """The tuple of a drop record whose ``ct`` has the tuple's bit, else None:
    ``ct_orig_*`` (the original direction's) or ``ct_reply_*`` (the reply's)."""
    def get(name: str) -> Any:
        return getattr(raw, prefix + name)
    family = NFPROTO_FAMILIES.get(get("l3num"))
    if family is None:
        return None
    n = 4 if family == "ipv4" else 16
    saddr = ipaddress.ip_address(bytes(get("saddr")[:n]))
    daddr = ipaddress.ip_address(bytes(get("daddr")[:n]))
    l4, sport, dport = get("l4proto"), get("sport"), get("dport")
    if l4 in PORT_PROTOS:
        return CtTuple(family, l4, saddr, daddr, socket.ntohs(sport), socket.ntohs(dport))
    if l4 in ICMP_PROTOS:
        return CtTuple(family, l4, saddr, daddr, icmp_id=socket.ntohs(sport),
                       icmp_type=dport & 0xFF, icmp_code=dport >> 8)
    return CtTuple(family, l4, saddr, daddr)
