"""ctypes mirror of ``bpf/path_event.h``. A unit test keeps the two in step."""

from __future__ import annotations

import ctypes as ct

from kdbg.trace.hops import RawHopSeen

# Counter slots, as in path_event.h
CTR_LOST, CTR_TRACK_FULL, CTR_PACKETS, CTR_ENDS = 0, 1, 2, 3
NR_CTRS = 4


class RawPathTrack(ct.Structure):
    """``struct kdbg_path_track``: the tracking map's value."""

    _fields_ = [
        ("first_ns", ct.c_uint64),
        ("last_ns", ct.c_uint64),
    ]


class RawPathEvent(ct.Structure):
    """``struct kdbg_path_event``: only kdbg.path.event touches it."""

    _fields_ = [
        ("time_ns", ct.c_uint64),
        ("first_ns", ct.c_uint64),
        ("skbaddr", ct.c_uint64),
        ("location", ct.c_uint64),
        ("reason", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("seen", RawHopSeen),
        ("tp", ct.c_uint8),
        ("pad0", ct.c_uint8 * 7),
    ]
