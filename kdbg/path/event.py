"""Path records: decoded once, at the boundary, into frozen dataclasses.

A :class:`Hop` is one tracepoint a tracked packet passed; an :class:`End` is
where its path ended (``dropped`` with the kernel's reason, or ``consumed``).
Both name their packet by a small number given in order of first sight.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdbg.symbols.kallsyms import Location
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace.event import IPAddress, addresses
from kdbg.trace.filters import PROTO_NAMES

from . import layout
from .nsnames import NetnsNames

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


@dataclass(frozen=True)
class Hop:
    """A tracked packet passed a tracepoint."""

    packet: int
    skb: int
    time_ns: int
    since_first_ns: int
    tracepoint: str
    cpu: int
    netns: int | None
    netns_name: str | None
    ifname: str | None
    ifindex: int | None
    headers: Headers

    def to_json(self) -> dict[str, Any]:
        """The documented ``{"type": "hop", ...}`` record (docs/path.md)."""
        return {
            "type": "hop", "packet": self.packet, "skb": f"0x{self.skb:x}",
            "time_ns": self.time_ns, "since_first_ns": self.since_first_ns,
            "tracepoint": self.tracepoint, "cpu": self.cpu, "netns": self.netns,
            "netns_name": self.netns_name, "ifname": self.ifname, "ifindex": self.ifindex,
            **self.headers.to_json(),
        }

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> Hop:
        return cls(
            packet=rec["packet"], skb=int(rec.get("skb", "0x0"), 16), time_ns=rec["time_ns"],
            since_first_ns=rec["since_first_ns"], tracepoint=rec["tracepoint"],
            cpu=rec.get("cpu", 0), netns=rec.get("netns"), netns_name=rec.get("netns_name"),
            ifname=rec.get("ifname"), ifindex=rec.get("ifindex"),
            headers=Headers.from_json(rec),
        )


@dataclass(frozen=True)
class End:
    """Where a tracked packet's path ended."""

    packet: int
    skb: int
    time_ns: int
    since_first_ns: int
    tracepoint: str
    fate: str
    reason: str | None
    reason_code: int | None
    location: str | None
    cpu: int
    netns: int | None
    netns_name: str | None
    ifname: str | None

    def to_json(self) -> dict[str, Any]:
        """The documented ``{"type": "end", ...}`` record (docs/path.md)."""
        rec: dict[str, Any] = {
            "type": "end", "packet": self.packet, "skb": f"0x{self.skb:x}",
            "time_ns": self.time_ns, "since_first_ns": self.since_first_ns,
            "tracepoint": self.tracepoint, "fate": self.fate,
        }
        if self.reason is not None:
            rec["reason"] = self.reason
            rec["reason_code"] = self.reason_code
        if self.location is not None:
            rec["location"] = self.location
        rec.update(cpu=self.cpu, netns=self.netns, netns_name=self.netns_name,
                   ifname=self.ifname)
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> End:
        return cls(
            packet=rec["packet"], skb=int(rec.get("skb", "0x0"), 16), time_ns=rec["time_ns"],
            since_first_ns=rec["since_first_ns"], tracepoint=rec["tracepoint"],
            fate=rec["fate"], reason=rec.get("reason"), reason_code=rec.get("reason_code"),
            location=rec.get("location"), cpu=rec.get("cpu", 0), netns=rec.get("netns"),
            netns_name=rec.get("netns_name"), ifname=rec.get("ifname"),
        )


PathRecord = Hop | End


def from_json(rec: dict[str, Any]) -> PathRecord | None:
    """A hop or an end from its JSON record; None for any other record type."""
    if rec.get("type") == "hop":
        return Hop.from_json(rec)
    if rec.get("type") == "end":
        return End.from_json(rec)
    return None


def _headers(raw: layout.RawPathEvent) -> Headers:
    saddr, daddr = addresses(raw.family, raw.saddr, raw.daddr)
    is_icmp = raw.l4proto in (1, 58) and bool(raw.l4_valid)
    has_ports = bool(raw.l4_valid) and raw.l4proto not in (1, 58)
    return Headers(
        len=raw.len, ethertype=raw.protocol,
        family={4: "ipv4", 6: "ipv6"}.get(raw.family),
        proto=PROTO_NAMES.get(raw.l4proto, str(raw.l4proto)) if raw.family else None,
        saddr=saddr, daddr=daddr,
        sport=raw.sport if has_ports or is_icmp else None,
        dport=raw.dport if has_ports or is_icmp else None,
        icmp_type=raw.icmp_type if is_icmp else None,
        icmp_code=raw.icmp_code if is_icmp else None,
    )


class PathDecoder:
    """Turns raw ring-buffer records into :class:`Hop` and :class:`End`.

    Packets are numbered 1, 2, ... by (skb address, time of first hop): an skb
    address is reused once its packet is freed, the pair is not.
    """

    def __init__(self, reasons: ReasonTable, locate: Callable[[int], Location],
                 names: NetnsNames | None = None) -> None:
        self.reasons = reasons
        self.locate = locate
        self.names = names or NetnsNames()
        self._packets: dict[tuple[int, int], int] = {}
        self._next = 1
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC; report wall-clock time.
        self.wall_offset_ns = time.time_ns() - time.monotonic_ns()

    def decode(self, raw: layout.RawPathEvent) -> PathRecord:
        key = (raw.skbaddr, raw.first_ns)
        packet = self._packets.get(key)
        if packet is None:
            packet = self._packets[key] = self._next
            self._next += 1
        tracepoint = layout.TP_NAMES.get(raw.tp, f"tp{raw.tp}")
        netns = raw.netns or None
        ifname = raw.ifname.decode(errors="replace") or None
        common: dict[str, Any] = dict(
            packet=packet, skb=raw.skbaddr, time_ns=raw.time_ns + self.wall_offset_ns,
            since_first_ns=raw.time_ns - raw.first_ns, tracepoint=tracepoint, cpu=raw.cpu,
            netns=netns, netns_name=self.names.name(netns), ifname=ifname,
        )
        if raw.tp in (layout.TP_KFREE_SKB, layout.TP_CONSUME_SKB):
            del self._packets[key]
            dropped = raw.tp == layout.TP_KFREE_SKB
            return End(
                **common, fate="dropped" if dropped else "consumed",
                reason=self.reasons.name(raw.reason) if dropped else None,
                reason_code=raw.reason if dropped else None,
                location=str(self.locate(raw.location)) if raw.location else None,
            )
        return Hop(**common, ifindex=raw.ifindex or None, headers=_headers(raw))
