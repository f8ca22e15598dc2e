"""Decoding raw records into DropEvent, and the JSON round trip."""

from __future__ import annotations

import ipaddress

import pytest

from kdbg.symbols.kallsyms import Kallsyms
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace.event import Decoder, DropEvent
from kdbg.trace.layout import RawDropEvent

KSYMS = Kallsyms.parse(
    "ffffffff81000000 T _text\nffffffff81a00000 T nft_do_chain\n"
    "ffffffff81a01000 T nf_hook_slow\nffffffff82000000 T _etext\n"
)
REASONS = ReasonTable({2: "NOT_SPECIFIED", 3: "NO_SOCKET", 12: "NETFILTER_DROP"}, "test")


def raw_v4() -> RawDropEvent:
    r = RawDropEvent()
    r.time_ns, r.skbaddr, r.location = 1_000, 0xFFFF888001234500, 0xFFFFFFFF81A003E8
    r.tgid, r.tid, r.cpu, r.reason = 42, 43, 1, 12
    r.netns, r.ifindex, r.len, r.stack_id = 4026532246, 3, 35, 7
    r.protocol, r.family, r.l4proto, r.l4_valid = 0x0800, 4, 17, 1
    r.sport, r.dport = 40000, 5555
    r.saddr[:4] = list(ipaddress.IPv4Address("10.77.9.1").packed)
    r.daddr[:4] = list(ipaddress.IPv4Address("10.77.9.2").packed)
    r.ifname = b"veth-b"
    r.comm = b"python3"
    return r


def test_decode_ipv4_udp() -> None:
    dec = Decoder(REASONS, KSYMS, stack_of=lambda sid: [0xFFFFFFFF81A003E8, 0xFFFFFFFF81A01010])
    ev = dec.decode(raw_v4())
    assert ev.reason == "NETFILTER_DROP" and ev.reason_code == 12
    assert ev.location == "nft_do_chain+0x3e8"
    assert ev.saddr == ipaddress.IPv4Address("10.77.9.1")
    assert (ev.proto, ev.family, ev.sport, ev.dport) == ("udp", "ipv4", 40000, 5555)
    assert (ev.netns, ev.ifname, ev.ifindex, ev.comm) == (4026532246, "veth-b", 3, "python3")
    assert ev.icmp_type is None
    assert [str(f) for f in ev.stack or ()] == ["nft_do_chain+0x3e8", "nf_hook_slow+0x10"]
    assert ev.time_ns > 1_000_000_000_000_000_000  # wall clock, ns since the epoch


def test_decode_icmp6_and_unparsed() -> None:
    r = raw_v4()
    r.family, r.l4proto, r.icmp_type, r.sport, r.dport = 6, 58, 128, 0x1234, 7
    r.saddr[:] = list(ipaddress.IPv6Address("fd77:9::1").packed)
    r.daddr[:] = list(ipaddress.IPv6Address("fd77:9::2").packed)
    ev = Decoder(REASONS, KSYMS).decode(r)
    assert (ev.proto, ev.family, ev.icmp_type, ev.sport) == ("icmp6", "ipv6", 128, None)
    assert str(ev.daddr) == "fd77:9::2"
    r.family, r.l4_valid, r.ifname, r.netns = 0, 0, b"", 0
    ev = Decoder(REASONS, KSYMS).decode(r)
    assert (ev.proto, ev.saddr, ev.sport, ev.ifname, ev.netns) == (None, None, None, None, None)


def test_json_round_trip() -> None:
    ev = Decoder(REASONS, KSYMS, stack_of=lambda sid: [0xFFFFFFFF81A01010]).decode(raw_v4())
    rec = ev.to_json()
    assert rec["type"] == "drop"
    assert rec["address"] == "0xffffffff81a003e8" and rec["symbol"] == "nft_do_chain"
    assert rec["stack"][0]["frame"] == "nf_hook_slow+0x10"
    assert DropEvent.from_json(rec) == ev


@pytest.mark.parametrize("ctinfo, has_ct, state, reply", [
    (0, 1, "established", False),  # IP_CT_ESTABLISHED
    (1, 1, "related", False),
    (2, 1, "new", False),
    (3, 1, "established", True),  # IP_CT_ESTABLISHED_REPLY
    (4, 1, "related", True),
    (0, 0, "invalid", None),  # no entry: nftables' ct state invalid
    (7, 0, "untracked", None),  # IP_CT_UNTRACKED ('notrack')
    (0xFF, 0, None, None),  # the kernel's sk_buff has no _nfct
])
def test_mark_and_ct_state_of_a_drop(ctinfo: int, has_ct: int, state: str | None,
                                     reply: bool | None) -> None:
    r = raw_v4()
    r.mark, r.ctinfo, r.ct = 0x5, ctinfo, has_ct
    ev = Decoder(REASONS, KSYMS).decode(r)
    assert (ev.mark, ev.ct_state, ev.ct_reply) == (5, state, reply)
    rec = ev.to_json()
    assert rec["mark"] == 5 and rec.get("ct_state") == state and rec.get("ct_reply") == reply
    assert DropEvent.from_json(rec) == ev


def test_a_record_without_mark_says_nothing_of_it() -> None:
    """A record made before kdbg read the mark: not known, not zero."""
    ev = DropEvent.from_json({k: v for k, v in Decoder(REASONS, KSYMS).decode(raw_v4())
                              .to_json().items() if k not in ("mark", "ct_state", "ct_reply")})
    assert (ev.mark, ev.ct_state) == (None, None)
    assert "mark" not in ev.to_json() and "ct_state" not in ev.to_json()


def test_the_entrys_zone_and_mark_when_read() -> None:
    r = raw_v4()
    r.mark, r.ctinfo, r.ct, r.ct_zone, r.ct_mark = 0, 2, 1 | 2, 3, 0x7  # attached, read
    ev = Decoder(REASONS, KSYMS).decode(r)
    assert (ev.ct_state, ev.ct_zone, ev.ct_mark) == ("new", 3, 7)
    assert {k: ev.to_json()[k] for k in ("ct_zone", "ct_mark")} == {"ct_zone": 3, "ct_mark": 7}
    r.ct = 1  # attached, but conntrack is a module: vmlinux's BTF has no nf_conn
    ev = Decoder(REASONS, KSYMS).decode(r)
    assert (ev.ct_state, ev.ct_zone, ev.ct_mark) == ("new", None, None)
    assert "ct_zone" not in ev.to_json()


def test_the_entrys_status_only_when_read() -> None:
    r = raw_v4()
    r.ctinfo, r.ct, r.ct_status = 2, 1 | 4, (1 << 5) | (1 << 8)  # attached, status read
    ev = Decoder(REASONS, KSYMS).decode(r)
    assert ev.ct_status == 0x120 and ev.to_json()["ct_status"] == 0x120
    assert DropEvent.from_json(ev.to_json()) == ev
    r.ct = 1  # a record of layout 2 made before kdbg read it: the bit is clear
    ev = Decoder(REASONS, KSYMS).decode(r)
    assert ev.ct_status is None and "ct_status" not in ev.to_json()
