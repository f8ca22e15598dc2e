"""The drops the kernel counted instead of sending, while the ring buffer was full.

When user space falls behind, the drop program stops queueing events and counts each
further drop per key in its ``more`` table (reason, location, namespace, device and
packet), or, when that table is full, in ``more_coarse`` (without addresses and ports).
The BPF verdict program (``kdbg watch --bpf``) does the same with the program's JITed
entry as the location and its verdict as the reason; its counts name the program.
:class:`MoreCounts` reads both and says what was counted since it last looked;
:class:`Summarized` is one such count, decoded once, as a ``... and N more like this``
line or a ``{"type": "more"}`` record says it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kdbg.symbols.kallsyms import Location
from kdbg.trace.bpfverdict import BpfProg
from kdbg.trace.event import IPAddress, addresses
from kdbg.trace.filters import PROTO_NAMES
from kdbg.trace.headers import FAMILY_NAMES
from kdbg.trace.layout import RawMoreKey

TABLES = ("more", "more_coarse")
BY_PACKET = ("reason", "location", "netns", "ifname", "proto", "saddr", "daddr", "sport",
             "dport")
BY_DEVICE = ("reason", "location", "netns", "ifname")


@dataclass(frozen=True)
class Summarized:
    """``count`` drops that match, counted in the kernel and not sent, and the key they
    were counted by (``by``: its fields)."""

    count: int
    by: tuple[str, ...]
    reason: str
    reason_code: int
    location: Location
    proto: str | None
    family: str | None
    saddr: IPAddress | None
    daddr: IPAddress | None
    sport: int | None
    dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    netns: int | None
    ifname: str | None
    ifindex: int | None
    prog: BpfProg | None = None  # a BPF program's verdicts: the program

    def to_json(self) -> dict[str, Any]:
        """The documented ``{"type": "more", ...}`` record (docs/watch.md)."""
        loc = self.location
        rec: dict[str, Any] = {
            "type": "more", "count": self.count, "by": list(self.by), "reason": self.reason,
            "reason_code": self.reason_code, "location": str(loc),
            "address": f"0x{loc.address:x}", "symbol": loc.symbol, "offset": loc.offset,
            "module": loc.module, "netns": self.netns, "ifname": self.ifname,
            "ifindex": self.ifindex,
        }
        if "proto" in self.by:
            rec.update(proto=self.proto, family=self.family,
                       saddr=str(self.saddr) if self.saddr is not None else None,
                       daddr=str(self.daddr) if self.daddr is not None else None,
                       sport=self.sport, dport=self.dport)
            if self.icmp_type is not None:
                rec.update(icmp_type=self.icmp_type, icmp_code=self.icmp_code)
        if self.prog is not None:
            p = self.prog
            rec["prog"] = {"id": p.id, "name": p.name, "tag": p.tag, "type": p.kind,
                           "attach": p.attach, "via": p.via,
                           "verdict_lines": [ln.to_json() for ln in p.lines]}
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> Summarized:
        """Rebuild a count from its JSON record (recorded output, another machine's)."""
        saddr, daddr = (addresses_from(rec.get(k)) for k in ("saddr", "daddr"))
        return cls(
            count=rec["count"], by=tuple(rec["by"]), reason=rec["reason"],
            reason_code=rec["reason_code"],
            location=Location(int(rec["address"], 16), rec.get("symbol"), rec.get("offset", 0),
                              rec.get("module")),
            proto=rec.get("proto"), family=rec.get("family"), saddr=saddr, daddr=daddr,
            sport=rec.get("sport"), dport=rec.get("dport"), icmp_type=rec.get("icmp_type"),
            icmp_code=rec.get("icmp_code"), netns=rec.get("netns"), ifname=rec.get("ifname"),
            ifindex=rec.get("ifindex"),
            prog=BpfProg.from_json(rec["prog"]) if rec.get("prog") else None)


def addresses_from(text: str | None) -> IPAddress | None:
    """An address from its JSON text (None stays None)."""
    return None if text is None else ipaddress.ip_address(text)


def decode(raw: bytes, count: int, reason_name: Callable[[int], str],
           locate: Callable[[int], Location],
           prog_of: Callable[[RawMoreKey], BpfProg | None] | None = None) -> Summarized:
    """One table entry: its key's bytes and the count (summed over CPUs) to report;
    ``reason_name(code)``, ``locate(address)``, and for BPF verdicts ``prog_of(key)``."""
    k = RawMoreKey.from_buffer_copy(raw)
    saddr, daddr = addresses(k.family, k.saddr, k.daddr)
    is_icmp = k.l4proto in (1, 58)
    has_ports = bool(k.l4_valid) and not is_icmp
    return Summarized(
        count=count, by=BY_DEVICE if k.coarse else BY_PACKET,
        reason=reason_name(k.reason), reason_code=k.reason,
        location=locate(k.location),
        proto=("arp" if k.family == 3 else PROTO_NAMES.get(k.l4proto, str(k.l4proto))
               if k.family else None),
        family=FAMILY_NAMES.get(k.family), saddr=saddr, daddr=daddr,
        sport=k.sport if has_ports else None, dport=k.dport if has_ports else None,
        icmp_type=k.icmp_type if is_icmp and k.l4_valid else None,
        icmp_code=k.icmp_code if is_icmp and k.l4_valid else None,
        netns=k.netns or None, ifname=k.ifname.decode(errors="replace") or None,
        ifindex=k.ifindex or None, prog=prog_of(k) if prog_of is not None else None)


class MoreCounts:
    """What the kernel counted instead of sending, reported once: each read returns the
    counts that grew since the last. ``read_table(name)`` gives a table's (key, count
    summed over CPUs) pairs."""

    def __init__(self, read_table: Callable[[str], Iterable[tuple[bytes, int]]]) -> None:
        self._read = read_table
        self._told: dict[tuple[str, bytes], int] = {}
        self.total = 0  # every count reported so far

    def new(self) -> list[tuple[bytes, int]]:
        """(key, count since the last read) of every key that grew, fine keys first."""
        out = []
        for table in TABLES:
            for key, now in self._read(table):
                told = self._told.get((table, key), 0)
                if now > told:
                    self._told[table, key] = now
                    out.append((key, now - told))
        self.total += sum(n for _, n in out)
        return out
