"""A stop at the drop site on a packet the watch's filters leave out is not a hit
(:mod:`kdbg.breakwatch.stopfilter`): judged on what gdb read of the skb."""

from __future__ import annotations

from kdbg.breakwatch.stopfilter import left_out
from kdbg.debugger.skb import SkbInfo
from kdbg.trace.filters import PacketFilters

SKB = SkbInfo(0xFF11000006B66D00, len=33, ifname="lo", family="ipv4", proto="udp",
              saddr="127.0.0.1", daddr="127.0.0.1", sport=52549, dport=5555,
              netns=4026531840)


def test_the_packet_the_filters_keep_is_a_hit() -> None:
    keep = PacketFilters(reasons=("netfilter_drop",), proto="udp", dports=(5555,),
                         daddrs=("127.0.0.0/8",), ifname="lo", netns="4026531840")
    assert left_out(keep, SKB, "NETFILTER_DROP") is None
    assert left_out(PacketFilters(), SKB, None) is None


def test_each_filter_says_why_it_leaves_a_packet_out() -> None:
    cases = {
        PacketFilters(dports=(5595,)): "dport 5555, not --dport 5595",
        PacketFilters(ports=(22, 80)): "port 52549/5555, not --port 22 80",
        PacketFilters(proto="tcp"): "udp, not --proto tcp",
        PacketFilters(saddrs=("10.0.0.0/8",)): "saddr 127.0.0.1, not --saddr 10.0.0.0/8",
        PacketFilters(ifname="veth-b"): "device lo, not --ifname veth-b",
        PacketFilters(netns="4026532246"): "netns 4026531840, not --netns 4026532246",
        PacketFilters(reasons=("NO_SOCKET",)): "reason NETFILTER_DROP, not --reason NO_SOCKET",
    }
    for filters, why in cases.items():
        assert left_out(filters, SKB, "NETFILTER_DROP") == why


def test_what_gdb_could_not_read_or_the_host_cannot_compare_keeps_it() -> None:
    bare = SkbInfo(SKB.address)  # no DWARF: only the address
    assert left_out(PacketFilters(dports=(5595,), proto="tcp"), bare, None) is None
    # a namespace by name is the target's to resolve; a reason gdb did not read
    assert left_out(PacketFilters(netns="gj-b"), SKB, None) is None
    assert left_out(PacketFilters(reasons=("NO_SOCKET",)), SKB, None) is None
