"""ctypes mirror of ``bpf/kdbg_journey.h``: a journey's hops, a slot of the table, and the
drop record that carries a copy of one. A unit test keeps the two in step; gdb's
``kdbg-journey`` reads a slot from the target's memory with it too."""

from __future__ import annotations

import ctypes as ct

from kdbg.trace.hops import RawHopSeen
from kdbg.trace.layout import RawDropEvent

HOPS = 16  # KDBG_JOURNEY_HOPS
KINDSIZ = 16
HASH = 0x9E3779B97F4A7C15  # KDBG_JOURNEY_HASH
BUSY = 1  # KDBG_JOURNEY_BUSY: refused_why

# Counter slots, as in kdbg_journey.h
CTR_FOLLOWED, CTR_BUSY = 0, 1
NR_CTRS = 2


def slot_of(skb: int, slots: int) -> int:
    """The slot of the skb at address ``skb`` in a table of ``slots`` (a power of two):
    ``KDBG_JOURNEY_SLOT``."""
    bits = slots.bit_length() - 1
    return ((skb * HASH) & (2**64 - 1)) >> (64 - bits)


class RawJourneyHop(ct.Structure):
    """``struct kdbg_journey_hop``."""

    _fields_ = [
        ("time_ns", ct.c_uint64),
        ("dev", ct.c_uint64),
        ("seen", RawHopSeen),
        ("tp", ct.c_uint8),
        ("pad0", ct.c_uint8 * 3),
        ("kind", ct.c_char * KINDSIZ),
    ]


class RawJourney(ct.Structure):
    """``struct kdbg_journey``: a slot of the table."""

    _fields_ = [
        ("skbaddr", ct.c_uint64),
        ("first_ns", ct.c_uint64),
        ("last_ns", ct.c_uint64),
        ("refused_skb", ct.c_uint64),
        ("nhops", ct.c_uint32),
        ("ended", ct.c_uint32),
        ("refused_why", ct.c_uint32),
        ("refused_ended", ct.c_uint32),
        ("hops", RawJourneyHop * HOPS),
    ]


class RawJourneyDrop(ct.Structure):
    """``struct kdbg_journey_drop``: the drop record of ``kdbg watch --journey``."""

    _fields_ = [
        ("ev", RawDropEvent),
        ("table", ct.c_uint64),
        ("slot", ct.c_uint32),
        ("slots", ct.c_uint32),
        ("ring_full_ns", ct.c_uint64),
        ("followed", ct.c_uint32),
        ("pad0", ct.c_uint32),
        ("journey", RawJourney),
    ]


SLOT_SIZE = ct.sizeof(RawJourney)  # a BPF array's element: the value rounded up to 8
