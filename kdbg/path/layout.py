"""ctypes mirror of ``bpf/path_event.h``. A unit test keeps the two in step."""

from __future__ import annotations

import ctypes as ct

IFNAMSIZ = 16

# KDBG_TP_*: the tracepoint each record came from.
TP_NET_DEV_QUEUE = 1
TP_NETIF_RX = 2
TP_NETIF_RECEIVE_SKB = 3
TP_NETIF_RECEIVE_SKB_ENTRY = 4
TP_NAPI_GRO_RECEIVE_ENTRY = 5
TP_KFREE_SKB = 6
TP_CONSUME_SKB = 7

TP_NAMES: dict[int, str] = {
    TP_NET_DEV_QUEUE: "net:net_dev_queue",
    TP_NETIF_RX: "net:netif_rx",
    TP_NETIF_RECEIVE_SKB: "net:netif_receive_skb",
    TP_NETIF_RECEIVE_SKB_ENTRY: "net:netif_receive_skb_entry",
    TP_NAPI_GRO_RECEIVE_ENTRY: "net:napi_gro_receive_entry",
    TP_KFREE_SKB: "skb:kfree_skb",
    TP_CONSUME_SKB: "skb:consume_skb",
}

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
        ("netns", ct.c_uint32),
        ("ifindex", ct.c_int32),
        ("len", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("protocol", ct.c_uint16),
        ("tp", ct.c_uint8),
        ("family", ct.c_uint8),
        ("l4proto", ct.c_uint8),
        ("icmp_type", ct.c_uint8),
        ("icmp_code", ct.c_uint8),
        ("l4_valid", ct.c_uint8),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
        ("ifname", ct.c_char * IFNAMSIZ),
    ]
