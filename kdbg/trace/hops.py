"""The hop points a packet is followed through, by ``kdbg path`` and by the journey of
``kdbg watch --journey``/``--break``: the ``net:`` tracepoints where it is queued to a
device or received on one, and the two that end it; and what a packet looks like at a
hop (``struct kdbg_hop_seen``). Mirrors ``bpf/hop_seen.h`` (a unit test keeps the two
in step)."""

from __future__ import annotations

import ctypes as ct
from pathlib import Path

IFNAMSIZ = 16

# KDBG_TP_*: the point each record or hop came from.
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

# Hop tracepoints: (system, name, KDBG_TP_* id, runs on receive with L3 at skb->data).
HOP_TRACEPOINTS: tuple[tuple[str, str, int, bool], ...] = (
    ("net", "net_dev_queue", TP_NET_DEV_QUEUE, False),
    ("net", "netif_rx", TP_NETIF_RX, True),
    ("net", "netif_receive_skb", TP_NETIF_RECEIVE_SKB, True),
    ("net", "netif_receive_skb_entry", TP_NETIF_RECEIVE_SKB_ENTRY, True),
    ("net", "napi_gro_receive_entry", TP_NAPI_GRO_RECEIVE_ENTRY, True),
)
# Where a packet can enter the stack: a receive entry, or (locally made) its first queue.
ENTRY_POINTS = frozenset({TP_NET_DEV_QUEUE, TP_NETIF_RX, TP_NETIF_RECEIVE_SKB_ENTRY,
                          TP_NAPI_GRO_RECEIVE_ENTRY})

EVENTS = Path("/sys/kernel/tracing/events")


def available(events: Path = EVENTS) -> tuple[tuple[str, str, int, bool], ...]:
    """The hop tracepoints the running kernel has (tracefs lists each one it has)."""
    return tuple(h for h in HOP_TRACEPOINTS if (events / h[0] / h[1]).is_dir())


class RawHopSeen(ct.Structure):
    """``struct kdbg_hop_seen``: the device, namespace and packet at a hop."""

    _fields_ = [
        ("netns", ct.c_uint32),
        ("ifindex", ct.c_int32),
        ("len", ct.c_uint32),
        ("protocol", ct.c_uint16),
        ("family", ct.c_uint8),
        ("l4proto", ct.c_uint8),
        ("icmp_type", ct.c_uint8),
        ("icmp_code", ct.c_uint8),
        ("l4_valid", ct.c_uint8),
        ("pad0", ct.c_uint8),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
        ("ifname", ct.c_char * IFNAMSIZ),
    ]
