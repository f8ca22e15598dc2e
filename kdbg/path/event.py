"""Path records: decoded once, at the boundary, into frozen dataclasses.

A :class:`Hop` is one tracepoint a tracked packet passed; an :class:`End` is
where its path ended (``dropped`` with the kernel's reason, or ``consumed``).
Both name their packet by a small number given in order of first sight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdbg.symbols.kallsyms import Location
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import hops
from kdbg.trace.headers import Headers
from kdbg.trace.nsnames import NetnsNames

from . import layout


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
        tracepoint = hops.TP_NAMES.get(raw.tp, f"tp{raw.tp}")
        seen = raw.seen
        netns = seen.netns or None
        ifname = seen.ifname.decode(errors="replace") or None
        common: dict[str, Any] = dict(
            packet=packet, skb=raw.skbaddr, time_ns=raw.time_ns + self.wall_offset_ns,
            since_first_ns=raw.time_ns - raw.first_ns, tracepoint=tracepoint, cpu=raw.cpu,
            netns=netns, netns_name=self.names.name(netns), ifname=ifname,
        )
        if raw.tp in (hops.TP_KFREE_SKB, hops.TP_CONSUME_SKB):
            del self._packets[key]
            dropped = raw.tp == hops.TP_KFREE_SKB
            return End(
                **common, fate="dropped" if dropped else "consumed",
                reason=self.reasons.name(raw.reason) if dropped else None,
                reason_code=raw.reason if dropped else None,
                location=str(self.locate(raw.location)) if raw.location else None,
            )
        return Hop(**common, ifindex=seen.ifindex or None, headers=Headers.from_raw(seen))
