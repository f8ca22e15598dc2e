"""ctypes mirror of ``bpf/drop_event.h``. A unit test keeps the two in step."""

from __future__ import annotations

import ctypes as ct

IFNAMSIZ = 16
COMMLEN = 16

# Counter slots, as in drop_event.h
CTR_LOST, CTR_STATS_FULL, CTR_SEEN, CTR_MATCHED = 0, 1, 2, 3
NR_CTRS = 4

CHAIN_SLOTS = 12
CHAINS_PER_SITE = 16
CHAIN_SPAN = 2048
LEARN_FRAMES = 16
LEARN_PAGES = 9
PAGE = 4096
LEARN_BYTES = LEARN_PAGES * PAGE


class RawDropEvent(ct.Structure):
    """``struct kdbg_drop_event``: only kdbg.trace.event touches it."""

    _fields_ = [
        ("time_ns", ct.c_uint64),
        ("skbaddr", ct.c_uint64),
        ("location", ct.c_uint64),
        ("tgid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("reason", ct.c_uint32),
        ("netns", ct.c_uint32),
        ("ifindex", ct.c_int32),
        ("len", ct.c_uint32),
        ("stack_id", ct.c_int32),
        ("protocol", ct.c_uint16),
        ("family", ct.c_uint8),
        ("l4proto", ct.c_uint8),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("icmp_type", ct.c_uint8),
        ("icmp_code", ct.c_uint8),
        ("l4_valid", ct.c_uint8),
        ("chain", ct.c_uint8),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
        ("ifname", ct.c_char * IFNAMSIZ),
        ("comm", ct.c_char * COMMLEN),
        ("mark", ct.c_uint32),
        ("ctinfo", ct.c_uint8),
        ("ct", ct.c_uint8),
        ("ct_zone", ct.c_uint16),
        ("ct_mark", ct.c_uint32),
        ("ct_status", ct.c_uint32),
        ("ct_orig_saddr", ct.c_uint8 * 16),
        ("ct_orig_sport", ct.c_uint16),
        ("ct_orig_l3num", ct.c_uint16),
        ("ct_orig_daddr", ct.c_uint8 * 16),
        ("ct_orig_dport", ct.c_uint16),
        ("ct_orig_l4proto", ct.c_uint8),
        ("ct_orig_dir", ct.c_uint8),
        ("ct_reply_saddr", ct.c_uint8 * 16),
        ("ct_reply_sport", ct.c_uint16),
        ("ct_reply_l3num", ct.c_uint16),
        ("ct_reply_daddr", ct.c_uint8 * 16),
        ("ct_reply_dport", ct.c_uint16),
        ("ct_reply_l4proto", ct.c_uint8),
        ("ct_reply_dir", ct.c_uint8),
    ]


CT_NONE = 0xFF  # ctinfo when the kernel's sk_buff has no conntrack field
CT_ATTACHED, CT_READ, CT_STATUS, CT_TUPLE, CT_REPLY_TUPLE = 1, 2, 4, 8, 16  # bits of ``ct``


class RawStatsKey(ct.Structure):
    """``struct kdbg_stats_key``."""

    _fields_ = [
        ("location", ct.c_uint64),
        ("reason", ct.c_uint32),
        ("netns", ct.c_uint32),
        ("ifname", ct.c_char * IFNAMSIZ),
    ]


TALLY_SLOTS = 64


class RawTally(ct.Structure):
    """``struct kdbg_tally``: a per-CPU slot in front of the stats table."""

    _fields_ = [
        ("key", RawStatsKey),
        ("count", ct.c_uint64),
    ]


class RawMoreKey(ct.Structure):
    """``struct kdbg_more_key``: what the drops counted instead of sent share."""

    _fields_ = [
        ("location", ct.c_uint64),
        ("reason", ct.c_uint32),
        ("netns", ct.c_uint32),
        ("ifindex", ct.c_int32),
        ("family", ct.c_uint8),
        ("l4proto", ct.c_uint8),
        ("l4_valid", ct.c_uint8),
        ("coarse", ct.c_uint8),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("icmp_type", ct.c_uint8),
        ("icmp_code", ct.c_uint8),
        ("chain", ct.c_uint16),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
        ("ifname", ct.c_char * IFNAMSIZ),
    ]


class RawChain(ct.Structure):
    """``struct kdbg_chain``."""

    _fields_ = [
        ("id", ct.c_uint16),
        ("nslots", ct.c_uint16),
        ("span", ct.c_uint16),
        ("pad0", ct.c_uint16),
        ("off", ct.c_uint16 * CHAIN_SLOTS),
        ("ret", ct.c_uint64 * CHAIN_SLOTS),
    ]


class RawChains(ct.Structure):
    """``struct kdbg_chains``: the value of the chains map, keyed by drop location."""

    _fields_ = [
        ("span", ct.c_uint32),
        ("pad0", ct.c_uint32),
        ("c", RawChain * CHAINS_PER_SITE),
    ]


class RawLearn(ct.Structure):
    """``struct kdbg_learn``."""

    _fields_ = [
        ("fp", ct.c_uint64),
        ("location", ct.c_uint64),
        ("frames_bytes", ct.c_int32),
        ("pages", ct.c_uint32),
        ("reason", ct.c_uint32),
        ("pad0", ct.c_uint32),
        ("frames", ct.c_uint64 * LEARN_FRAMES),
        ("stack", ct.c_uint8 * LEARN_BYTES),
    ]
