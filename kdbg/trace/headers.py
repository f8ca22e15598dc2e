"""A packet's network and transport headers: decoded from the bytes at its network
header (what ``watch --break`` reads of a stopped skb, :mod:`kdbg.debugger.skb`, and
what gdb's ``kdbg-skb`` prints, :mod:`kdbg.prompt.skbview`), and as a hop saw them
(:class:`Headers`: ``kdbg path``'s hops and a journey's)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kdbg.trace.filters import PROTO_NAMES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_headers(data: bytes, ethertype: int) -> dict[str, Any]:
    """Addresses, protocol and ports from the bytes at the network header."""
    out: dict[str, Any] = {}
    if len(data) >= 20 and (ethertype == 0x0800 or (ethertype == 0 and data[0] >> 4 == 4)):
        ihl = (data[0] & 0x0F) * 4
        proto = data[9]
        out.update(family="ipv4", proto=PROTO_NAMES.get(proto, str(proto)),
                   saddr=str(ipaddress.IPv4Address(data[12:16])),
                   daddr=str(ipaddress.IPv4Address(data[16:20])))
        frag = struct.unpack(">H", data[6:8])[0] & 0x1FFF
        l4 = data[ihl:] if frag == 0 else b""
    elif len(data) >= 40 and (ethertype == 0x86DD or (ethertype == 0 and data[0] >> 4 == 6)):
        proto = data[6]
        out.update(family="ipv6", proto=PROTO_NAMES.get(proto, str(proto)),
                   saddr=str(ipaddress.IPv6Address(data[8:24])),
                   daddr=str(ipaddress.IPv6Address(data[24:40])))
        l4 = data[40:]
    else:
        return out
    if proto in (6, 17, 132) and len(l4) >= 4:
        out["sport"], out["dport"] = struct.unpack(">HH", l4[:4])
    return out


# A drop record's family field: 4, 6, or NFPROTO_ARP's 3 for ARP over Ethernet/IPv4,
# whose sender and target addresses are its source and destination.
FAMILY_NAMES = {4: "ipv4", 6: "ipv6", 3: "arp"}
# ARP's operations (ar_op), as nftables' 'arp operation' names them
ARP_OPS = {1: "request", 2: "reply", 3: "rrequest", 4: "rreply", 8: "inrequest",
           9: "inreply", 10: "nak"}


def arp_op_name(op: int) -> str:
    """``request``, ``reply``, …; the number for an operation nftables has no name for."""
    return ARP_OPS.get(op, str(op))


def arp_op_number(name: str | int) -> int:
    """The inverse of :func:`arp_op_name`."""
    if isinstance(name, int):
        return name
    return next((n for n, text in ARP_OPS.items() if text == name), None) or int(name)


def addresses(family: int, saddr: Sequence[int], daddr: Sequence[int]
              ) -> tuple[IPAddress | None, IPAddress | None]:
    """Source and destination from a record's 16-byte address fields (4 used for IPv4,
    and for ARP's sender and target)."""
    if family in (4, 3):
        return ipaddress.IPv4Address(bytes(saddr[:4])), ipaddress.IPv4Address(bytes(daddr[:4]))
    if family == 6:
        return ipaddress.IPv6Address(bytes(saddr)), ipaddress.IPv6Address(bytes(daddr))
    return None, None



ICMP_NAMES = {
    (4, 0): "echo reply", (4, 8): "echo request", (4, 3): "unreachable",
    (4, 11): "time exceeded",
    (6, 128): "echo request", (6, 129): "echo reply", (6, 1): "unreachable",
    (6, 3): "time exceeded", (6, 133): "router solicitation", (6, 134): "router advertisement",
    (6, 135): "neighbour solicitation", (6, 136): "neighbour advertisement",
    (6, 143): "MLDv2 report",
}
ETHERTYPES = {0x0806: "arp", 0x8100: "vlan", 0x88CC: "lldp"}


@dataclass(frozen=True)
class Headers:
    """What a hop saw of the packet: L3/L4 summary and length."""

    len: int
    ethertype: int
    family: str | None = None
    proto: str | None = None
    saddr: IPAddress | None = None
    daddr: IPAddress | None = None
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def icmp_id(self) -> int | None:
        return self.sport if self.icmp_type is not None else None

    def summary(self) -> str:
        """``10.0.0.1 -> 10.0.0.2 icmp echo request id=7 seq=1``, or a 5-tuple."""
        if self.family is None:
            return ETHERTYPES.get(self.ethertype, f"ethertype 0x{self.ethertype:04x}")
        if self.icmp_type is not None:
            fam = 4 if self.family == "ipv4" else 6
            what = ICMP_NAMES.get((fam, self.icmp_type), f"type {self.icmp_type}")
            text = f"{self.saddr} -> {self.daddr} {self.proto} {what}"
            if what.startswith("echo"):
                text += f" id={self.sport} seq={self.dport}"
            return text
        if self.sport is not None:
            def ep(a: IPAddress | None, p: int | None) -> str:
                return f"[{a}]:{p}" if a is not None and a.version == 6 else f"{a}:{p}"
            return f"{ep(self.saddr, self.sport)} -> {ep(self.daddr, self.dport)} {self.proto}"
        return f"{self.saddr} -> {self.daddr} {self.proto}"

    def to_json(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "len": self.len, "family": self.family, "proto": self.proto,
            "saddr": str(self.saddr) if self.saddr is not None else None,
            "daddr": str(self.daddr) if self.daddr is not None else None,
            "sport": self.sport, "dport": self.dport,
        }
        if self.family is None:
            rec["ethertype"] = f"0x{self.ethertype:04x}"
        if self.icmp_type is not None:
            rec.update(icmp_type=self.icmp_type, icmp_code=self.icmp_code,
                       icmp_id=self.sport, icmp_seq=self.dport)
            rec["sport"] = rec["dport"] = None
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> Headers:
        def addr(v: str | None) -> IPAddress | None:
            return ipaddress.ip_address(v) if v else None

        icmp = rec.get("icmp_type") is not None
        ethertype = int(rec.get("ethertype", "0x0"), 16) if rec.get("ethertype") else (
            0x86DD if rec.get("family") == "ipv6" else 0x0800 if rec.get("family") else 0)
        return cls(
            len=rec.get("len", 0), ethertype=ethertype, family=rec.get("family"),
            proto=rec.get("proto"), saddr=addr(rec.get("saddr")), daddr=addr(rec.get("daddr")),
            sport=rec.get("icmp_id") if icmp else rec.get("sport"),
            dport=rec.get("icmp_seq") if icmp else rec.get("dport"),
            icmp_type=rec.get("icmp_type"), icmp_code=rec.get("icmp_code"),
        )

    @classmethod
    def from_raw(cls, raw: Any) -> Headers:
        """From what a hop saw (``struct kdbg_hop_seen``: a path event's, a journey hop's)."""
        saddr, daddr = addresses(raw.family, raw.saddr, raw.daddr)
        is_icmp = raw.l4proto in (1, 58) and bool(raw.l4_valid)
        has_ports = bool(raw.l4_valid) and raw.l4proto not in (1, 58)
        return cls(
            len=raw.len, ethertype=raw.protocol,
            family={4: "ipv4", 6: "ipv6"}.get(raw.family),
            proto=PROTO_NAMES.get(raw.l4proto, str(raw.l4proto)) if raw.family else None,
            saddr=saddr, daddr=daddr,
            sport=raw.sport if has_ports or is_icmp else None,
            dport=raw.dport if has_ports or is_icmp else None,
            icmp_type=raw.icmp_type if is_icmp else None,
            icmp_code=raw.icmp_code if is_icmp else None,
        )
