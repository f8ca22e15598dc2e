"""A dropped packet's journey: the hops it crossed before its drop, oldest first.

The kernel keeps each followed packet's hops in a slot of a table (bpf/kdbg_journey.h);
a drop's record carries a copy of its skb's slot, and gdb reads the stopped skb's slot
from the target's memory. :func:`assemble` turns such a slot into a :class:`Journey`
once, at the boundary: which hops are this packet's, their times before the drop, the
names of their namespaces, and why the journey is incomplete when it is.
"""

from __future__ import annotations

import ctypes as ct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kdbg.trace import hops as points
from kdbg.trace import journeylayout as jl
from kdbg.trace.headers import Headers

# A journey whose first hop came this soon after the tracer attached may have begun
# before: its earlier hops would not have been seen.
ENTER_WINDOW_NS = 10_000_000
DROP, LAST_HOP = "drop", "last hop"  # what a journey's times count back from
CHANGED = ("netns", "ifname", "saddr", "daddr", "sport", "dport")
_OF_HEADERS = frozenset({"saddr", "daddr", "sport", "dport"})


@dataclass(frozen=True)
class JourneyHop:
    """One hop: where the packet was, when, and what it looked like there."""

    point: str  # the tracepoint: net:netif_rx
    time_ns: int  # wall clock
    before_ns: int  # before the journey's reference (the drop, or its last hop)
    netns: int | None
    netns_name: str | None
    ifname: str | None
    ifindex: int | None
    kind: str | None  # the device's kind: veth, bridge, vxlan...; None for a NIC or lo
    headers: Headers

    def value(self, field: str) -> object:
        """The hop's ``field`` among :data:`CHANGED`."""
        return getattr(self.headers if field in _OF_HEADERS else self, field)

    def to_json(self, reference: str = DROP) -> dict[str, Any]:
        key = "before_drop_ns" if reference == DROP else "before_last_hop_ns"
        return {"point": self.point, key: self.before_ns, "time_ns": self.time_ns,
                "netns": self.netns, "netns_name": self.netns_name, "ifname": self.ifname,
                "ifindex": self.ifindex, "kind": self.kind, **self.headers.to_json()}

    @classmethod
    def from_json(cls, rec: Mapping[str, Any]) -> JourneyHop:
        before = rec.get("before_drop_ns", rec.get("before_last_hop_ns", 0))
        return cls(point=rec["point"], time_ns=rec.get("time_ns", 0), before_ns=before,
                   netns=rec.get("netns"), netns_name=rec.get("netns_name"),
                   ifname=rec.get("ifname"), ifindex=rec.get("ifindex"),
                   kind=rec.get("kind"), headers=Headers.from_json(dict(rec)))


@dataclass(frozen=True)
class JourneyTable:
    """What it takes to read the tracer's journeys: where the kernel keeps them (the
    table's slot 0, a kernel address), its number of slots and the size of one, the
    tracer's clock (wall time minus the kernel's monotonic time) and when it attached
    (monotonic ns; None: unknown)."""

    address: int
    slots: int
    slot_size: int = jl.SLOT_SIZE
    wall_offset_ns: int = 0
    attached_ns: int | None = None

    def slot_address(self, skb: int) -> int:
        """The kernel address of the slot of the skb at ``skb``."""
        return self.address + jl.slot_of(skb, self.slots) * self.slot_size

    def to_json(self) -> dict[str, Any]:
        return {"address": f"0x{self.address:x}", "slots": self.slots,
                "slot_size": self.slot_size, "wall_offset_ns": self.wall_offset_ns,
                "attached_ns": self.attached_ns}

    @classmethod
    def from_json(cls, rec: Mapping[str, Any]) -> JourneyTable:
        return cls(int(rec["address"], 16), int(rec["slots"]), int(rec["slot_size"]),
                   int(rec.get("wall_offset_ns", 0)), rec.get("attached_ns"))


@dataclass(frozen=True)
class Journey:
    """The hops of one packet before its drop, oldest first. ``notes`` say why it is
    incomplete (none: every hop since it entered is here)."""

    hops: tuple[JourneyHop, ...]
    notes: tuple[str, ...] = ()
    table: JourneyTable | None = None
    reference: str = DROP

    @property
    def complete(self) -> bool:
        return not self.notes

    def to_json(self) -> dict[str, Any]:
        """The keys a record carries: ``journey`` (the hops), ``journey_incomplete`` (the
        notes, when there are any) and ``journey_table``."""
        rec: dict[str, Any] = {"journey": [h.to_json(self.reference) for h in self.hops]}
        if self.notes:
            rec["journey_incomplete"] = list(self.notes)
        if self.table is not None:
            rec["journey_table"] = self.table.to_json()
        return rec

    @classmethod
    def from_json(cls, rec: Mapping[str, Any]) -> Journey | None:
        """The journey of a record that has one (``journey`` present), else None."""
        if rec.get("journey") is None:
            return None
        hops = tuple(JourneyHop.from_json(h) for h in rec["journey"])
        reference = LAST_HOP if hops and "before_last_hop_ns" in rec["journey"][0] else DROP
        table = rec.get("journey_table")
        return cls(hops, tuple(rec.get("journey_incomplete", ())),
                   JourneyTable.from_json(table) if table else None, reference)


def changes(prev: JourneyHop, hop: JourneyHop) -> list[tuple[str, object, object]]:
    """What differs between two hops: ``(field, before, after)`` for each of
    :data:`CHANGED` (a namespace, a device, NAT's addresses and ports)."""
    return [(f, prev.value(f), hop.value(f)) for f in CHANGED if prev.value(f) != hop.value(f)]


NetnsName = Callable[[int | None], str | None]


def _no_name(_inode: int | None) -> str | None:
    return None


def _hop(raw: jl.RawJourneyHop, ref_ns: int, table: JourneyTable | None,
         netns_name: NetnsName) -> JourneyHop:
    seen = raw.seen
    netns = seen.netns or None
    wall = table.wall_offset_ns if table is not None else 0
    return JourneyHop(
        point=points.TP_NAMES.get(raw.tp, f"tp{raw.tp}"), time_ns=raw.time_ns + wall,
        before_ns=ref_ns - raw.time_ns, netns=netns, netns_name=netns_name(netns),
        ifname=seen.ifname.decode(errors="replace") or None, ifindex=seen.ifindex or None,
        kind=raw.kind.decode(errors="replace") or None, headers=Headers.from_raw(seen))


RING_FULL = ("not followed: the ring buffer was full when it entered (no packet is followed "
             "then, its drop's record would not be sent)")


def _not_followed(raw: jl.RawJourney, skb: int, table: JourneyTable | None,
                  ref_ns: int | None, ring_full: bool = False) -> str:
    if ring_full:
        return RING_FULL
    if raw.refused_skb == skb and raw.refused_why == jl.BUSY:
        slots = f" of {table.slots}" if table is not None else ""
        return (f"not followed: its slot in the journey table{slots} was following another "
                "packet (table full)")
    attached = table.attached_ns if table is not None else None
    if attached is not None and ref_ns is not None and ref_ns - attached < ENTER_WINDOW_NS:
        return ("it may have entered before the tracer: no hop seen, and it was dropped "
                + _since_attach(ref_ns - attached))
    return ("no hop seen: the packet entered before the tracer, or was made and dropped "
            "before it reached an interface")


def _notes(raw: jl.RawJourney, kept: list[jl.RawJourneyHop], table: JourneyTable | None
           ) -> list[str]:
    notes = []
    if raw.nhops > jl.HOPS:
        notes.append(f"its first {raw.nhops - jl.HOPS} hops were not kept (a slot keeps the "
                     f"last {jl.HOPS})")
    elif kept[0].tp not in points.ENTRY_POINTS:
        first = kept[0].seen.ifname.decode(errors="replace") or "no device"
        notes.append(f"its first hop seen ({points.TP_NAMES.get(kept[0].tp)} on {first}) is "
                     "not where a packet enters: the hops before it were not seen (it entered "
                     "before the tracer, or matched the filters only there)")
    attached = table.attached_ns if table is not None else None
    if attached is not None and kept[0].time_ns - attached < ENTER_WINDOW_NS:
        notes.append("it may have entered before the tracer: its first hop came "
                     + _since_attach(kept[0].time_ns - attached))
    return notes


def _since_attach(delta_ns: int) -> str:
    """When something came, relative to the tracer's attach (``delta_ns`` after it):
    before it ends, the hop programs were still being attached one by one (seconds
    apart in a loaded TCG guest), so some of a packet's hops could not be seen."""
    if delta_ns < 0:
        return (f"{-delta_ns / 1e6:.3f} ms before the tracer had attached all its "
                "programs")
    return f"{delta_ns / 1e6:.3f} ms after the tracer attached"


def assemble(raw: jl.RawJourney, skb: int, ref_ns: int | None,
             table: JourneyTable | None = None, netns_name: NetnsName = _no_name, *,
             followed: bool | None = None, ring_full: bool = False) -> Journey:
    """The journey of the skb at ``skb`` from its slot ``raw`` (a copy in its drop's
    record, or read from the target at a stop), with ``table``'s clock and namespace
    names from ``netns_name``. Times count back from ``ref_ns`` (the drop's monotonic
    time), or from the last hop when it is None (at a stop, before the drop).
    ``followed``: whether the slot followed this very packet, as its drop found it (a
    slot can hold the ended journey of an earlier packet that had the same skb); None:
    a live slot of the skb (at a stop). ``ring_full``: the drop before this one on its
    CPU found the ring buffer full."""
    reference = DROP if ref_ns is not None else LAST_HOP
    n = raw.nhops
    if followed is None:
        followed = raw.skbaddr == skb and not raw.ended
    if not followed or raw.skbaddr != skb or n == 0:
        return Journey((), (_not_followed(raw, skb, table, ref_ns, ring_full),), table,
                       reference)
    kept = [raw.hops[i % jl.HOPS] for i in range(max(0, n - jl.HOPS), n)]
    ref = ref_ns if ref_ns is not None else kept[-1].time_ns
    return Journey(tuple(_hop(h, ref, table, netns_name) for h in kept),
                   tuple(_notes(raw, kept, table)), table, reference)


def from_record(raw: jl.RawJourneyDrop, wall_offset_ns: int, attached_ns: int | None,
                netns_name: NetnsName = _no_name) -> Journey:
    """The journey a drop record carries (``struct kdbg_journey_drop``), with the
    tracer's clock offset and attach time."""
    table = JourneyTable(raw.table, raw.slots, jl.SLOT_SIZE, wall_offset_ns, attached_ns)
    return assemble(raw.journey, raw.ev.skbaddr, raw.ev.time_ns, table, netns_name,
                    followed=bool(raw.followed), ring_full=raw.ring_full_ns != 0)


def from_slot(data: bytes, skb: int, table: JourneyTable,
              netns_name: NetnsName = _no_name) -> Journey:
    """The journey of the skb at ``skb`` at a stop, from its slot's bytes as read from the
    target's memory (``table.slot_address(skb)``): before its drop, so its times count
    back from its last hop."""
    if len(data) < ct.sizeof(jl.RawJourney):
        raise ValueError(f"a journey slot is {ct.sizeof(jl.RawJourney)} bytes, not {len(data)}")
    return assemble(jl.RawJourney.from_buffer_copy(data), skb, None, table, netns_name)
