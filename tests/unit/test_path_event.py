"""Path records: decoding raw events, numbering packets, JSON, netns names."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from kdbg.path import layout
from kdbg.path.event import End, Hop, PathDecoder, from_json
from kdbg.symbols import tpformat
from kdbg.symbols.kallsyms import Location
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import hops
from kdbg.trace.headers import Headers
from kdbg.trace.nsnames import NetnsNames
from tests.conftest import DATA

REASONS = ReasonTable.from_tpformat(
    tpformat.parse((DATA / "kfree_skb.format.6.18").read_text(), "skb", "kfree_skb"))
SKB = 0xFFFF8881D5197800


def locate(addr: int) -> Location:
    return Location(addr, "icmp_rcv", addr - 0xFFFFFFFF81000000)


def raw_event(tp: int, *, first_ns: int = 1000, time_ns: int = 1000, skb: int = SKB,
              netns: int = 4026532177, ifname: bytes = b"veth-a", icmp_type: int = 8,
              reason: int = 0, location: int = 0) -> layout.RawPathEvent:
    r = layout.RawPathEvent()
    r.tp, r.first_ns, r.time_ns, r.skbaddr = tp, first_ns, time_ns, skb
    s = r.seen
    s.netns, s.ifname = netns, ifname
    s.ifindex, s.len, s.protocol, s.family, s.l4proto = 2, 84, 0x0800, 4, 1
    s.icmp_type, s.l4_valid, s.sport, s.dport = icmp_type, 1, 4242, 1
    s.saddr[:4] = list(ipaddress.IPv4Address("10.77.5.1").packed)
    s.daddr[:4] = list(ipaddress.IPv4Address("10.77.5.2").packed)
    r.reason, r.location = reason, location
    return r


def decoder(tmp_path: Path) -> PathDecoder:
    return PathDecoder(REASONS, locate, NetnsNames(tmp_path))


def test_hop_decodes_once_into_typed_fields(tmp_path: Path) -> None:
    hop = decoder(tmp_path).decode(raw_event(hops.TP_NET_DEV_QUEUE, time_ns=1500))
    assert isinstance(hop, Hop)
    assert (hop.packet, hop.skb, hop.since_first_ns) == (1, SKB, 500)
    assert hop.tracepoint == "net:net_dev_queue"
    assert (hop.netns, hop.ifname, hop.ifindex) == (4026532177, "veth-a", 2)
    h = hop.headers
    assert (h.family, h.proto, h.icmp_type, h.icmp_id, h.dport) == ("ipv4", "icmp", 8, 4242, 1)
    assert h.saddr == ipaddress.IPv4Address("10.77.5.1")
    assert h.summary() == "10.77.5.1 -> 10.77.5.2 icmp echo request id=4242 seq=1"


def test_drop_and_consume_end_a_path(tmp_path: Path) -> None:
    dec = decoder(tmp_path)
    dec.decode(raw_event(hops.TP_NET_DEV_QUEUE))
    end = dec.decode(raw_event(hops.TP_KFREE_SKB, time_ns=1300, reason=REASONS.code(
        "NETFILTER_DROP"), location=0xFFFFFFFF81000010))
    assert isinstance(end, End)
    assert (end.packet, end.fate, end.reason, end.since_first_ns) == (
        1, "dropped", "NETFILTER_DROP", 300)
    assert end.location == "icmp_rcv+0x10"
    end = dec.decode(raw_event(hops.TP_CONSUME_SKB, first_ns=5000, time_ns=5000))
    assert isinstance(end, End)
    assert (end.fate, end.reason, end.reason_code) == ("consumed", None, None)


def test_reused_skb_address_is_a_new_packet(tmp_path: Path) -> None:
    dec = decoder(tmp_path)
    first = dec.decode(raw_event(hops.TP_NET_DEV_QUEUE, first_ns=1000))
    dec.decode(raw_event(hops.TP_CONSUME_SKB, first_ns=1000))
    again = dec.decode(raw_event(hops.TP_NET_DEV_QUEUE, first_ns=9000, time_ns=9000))
    other = dec.decode(raw_event(hops.TP_NETIF_RX, skb=SKB + 0x100, first_ns=9001))
    assert [first.packet, again.packet, other.packet] == [1, 2, 3]


def test_json_round_trip() -> None:
    for line in (DATA / "path" / "bridge_ping.6.18.jsonl").read_text().splitlines():
        rec = __import__("json").loads(line)
        decoded = from_json(rec)
        if rec["type"] == "summary":
            assert decoded is None
            continue
        assert decoded is not None and decoded.to_json() == rec


def test_headers_summaries() -> None:
    v6 = Headers(len=60, ethertype=0x86DD, family="ipv6", proto="udp",
                 saddr=ipaddress.ip_address("fd77:1::1"), daddr=ipaddress.ip_address("fd77:1::2"),
                 sport=40000, dport=5555)
    assert v6.summary() == "[fd77:1::1]:40000 -> [fd77:1::2]:5555 udp"
    assert Headers(len=28, ethertype=0x0806).summary() == "arp"
    assert Headers(len=28, ethertype=0x88B5).summary() == "ethertype 0x88b5"


def test_netns_names_refresh_on_unknown_inode(tmp_path: Path) -> None:
    now = [0.0]
    names = NetnsNames(tmp_path, min_interval=1.0, clock=lambda: now[0])
    (tmp_path / "blue").touch()
    blue = os.stat(tmp_path / "blue").st_ino
    assert names.name(blue) == "blue"
    (tmp_path / "red").touch()
    red = os.stat(tmp_path / "red").st_ino
    assert names.name(red) is None  # read less than min_interval ago
    now[0] = 2.0
    assert names.name(red) == "red"
    assert names.name(None) is None and names.name(0) is None
