"""ctypes mirror of ``bpf/drop_record.h``. A unit test keeps the two in step."""

from __future__ import annotations

import ctypes as ct

from kdbg.trace.layout import RawDropEvent
from kdbg.trace.ringbuf import RING_BUSY, RING_DISCARD, RING_HDR

__all__ = ["LINK_ETHERNET", "LINK_NONE", "LINK_RAW", "RING_BUSY", "RING_DISCARD", "RING_HDR",
           "RawDropRecord", "record_size", "snap_bytes"]

# Link types of the snapshot, as in drop_record.h
LINK_NONE, LINK_ETHERNET, LINK_RAW = 0, 1, 2


class RawDropRecord(ct.Structure):
    """``struct kdbg_drop_record``; the snapshot follows it. Only kdbg.record.offline
    decodes it."""

    _fields_ = [
        ("ev", RawDropEvent),
        ("caplen", ct.c_uint32),
        ("wirelen", ct.c_uint32),
        ("linktype", ct.c_uint16),
        ("devtype", ct.c_uint16),
        ("pad0", ct.c_uint32),
    ]


def snap_bytes(snaplen: int) -> int:
    """Bytes the snapshot takes in a record: ``snaplen`` rounded up to 8."""
    return (snaplen + 7) & ~7


def record_size(snaplen: int) -> int:
    """Bytes one record takes in the ring (and in a recording), its ring header included."""
    return RING_HDR + ct.sizeof(RawDropRecord) + snap_bytes(snaplen)
