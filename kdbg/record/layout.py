"""ctypes mirror of ``bpf/drop_record.h``. A unit test keeps the two in step."""

from __future__ import annotations

import ctypes as ct

from kdbg.trace.layout import RawDropEvent
from kdbg.trace.ringbuf import RING_BUSY, RING_DISCARD, RING_HDR

__all__ = ["LAYOUT", "LAYOUTS", "LINK_ETHERNET", "LINK_NONE", "LINK_RAW", "RING_BUSY",
           "RING_DISCARD", "RING_HDR", "RawDropRecord", "RawDropRecordV1", "RawDropRecordV2",
           "RawDropRecordV3",
           "record_size", "snap_bytes"]

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


_names = [f[0] for f in RawDropEvent._fields_]


class RawDropEventV1(ct.Structure):
    """``struct kdbg_drop_event`` as recordings of layout 'kdbg_drop_record 1' hold it:
    the same fields up to ``comm``, before the mark and conntrack state were read."""

    _fields_ = RawDropEvent._fields_[:_names.index("comm") + 1]


class RawDropRecordV1(ct.Structure):
    """``struct kdbg_drop_record`` of layout 'kdbg_drop_record 1'."""

    _fields_ = [("ev", RawDropEventV1), *RawDropRecord._fields_[1:]]


class RawDropEventV2(ct.Structure):
    """``struct kdbg_drop_event`` as recordings of layout 'kdbg_drop_record 2' hold it:
    the same fields up to ``ct_status``, before the conntrack entry's original tuple."""

    _fields_ = RawDropEvent._fields_[:_names.index("ct_status") + 1]


class RawDropRecordV2(ct.Structure):
    """``struct kdbg_drop_record`` of layout 'kdbg_drop_record 2'."""

    _fields_ = [("ev", RawDropEventV2), *RawDropRecord._fields_[1:]]


class RawDropEventV3(ct.Structure):
    """``struct kdbg_drop_event`` as recordings of layout 'kdbg_drop_record 3' hold it:
    the same fields up to the original tuple's, before the reply tuple."""

    _fields_ = RawDropEvent._fields_[:_names.index("ct_orig_dir") + 1]


class RawDropRecordV3(ct.Structure):
    """``struct kdbg_drop_record`` of layout 'kdbg_drop_record 3'."""

    _fields_ = [("ev", RawDropEventV3), *RawDropRecord._fields_[1:]]


LAYOUT = "kdbg_drop_record 4"  # what the recorder writes
# every layout kdbg reads: its record header (the snapshot follows)
LAYOUTS: dict[str, type[ct.Structure]] = {"kdbg_drop_record 1": RawDropRecordV1,
                                          "kdbg_drop_record 2": RawDropRecordV2,
                                          "kdbg_drop_record 3": RawDropRecordV3,
                                          LAYOUT: RawDropRecord}


def snap_bytes(snaplen: int) -> int:
    """Bytes the snapshot takes in a record: ``snaplen`` rounded up to 8."""
    return (snaplen + 7) & ~7


def record_size(snaplen: int, record: type[ct.Structure] = RawDropRecord) -> int:
    """Bytes one record takes in the ring (and in a recording), its ring header included."""
    return RING_HDR + ct.sizeof(record) + snap_bytes(snaplen)
