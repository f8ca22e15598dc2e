"""The conntrack entry's original tuple: decoded from the drop record, carried in JSON
and recordings (layout 3; layout 2 still read), and deciding ``ct original`` rules."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter

import pytest

from kdbg.causes.nftrules import Packet, Ruleset, find_rule
from kdbg.record import offline
from kdbg.trace.cttuple import CtTuple
from tests.conftest import DATA

A, B = ipaddress.ip_address("10.77.135.1"), ipaddress.ip_address("10.77.135.2")


@pytest.fixture(scope="module")
def rs() -> Ruleset:
    """Captured from a namespace loaded with tests/data/nft/original.nft."""
    nft = DATA / "nft"
    return Ruleset.from_json(json.loads((nft / "original.json").read_text()),
                             (nft / "original.txt").read_text())


def pkt(sport: int, orig_dport: int | None, state: str = "new") -> Packet:
    orig = (CtTuple("ipv4", 17, A, B, sport, orig_dport) if orig_dport is not None
            else None)
    return Packet("ipv4", 17, A, B, sport, 7932, iifname="veth-b", ct_state=state,
                  ct_reply=False, ct_original=orig)


@pytest.mark.parametrize("sport, orig_dport, handle", [
    (40000, 7931, 4),  # DNAT'd: the packet says 7932, its entry began at 7931
    (40000, 7932, 5),
    (40001, 7932, 7),  # neither ct original rule: the IPv6 one breaks on an IPv4 entry
])
def test_the_original_tuple_decides(rs: Ruleset, sport: int, orig_dport: int,
                                    handle: int) -> None:
    f = find_rule(rs, pkt(sport, orig_dport), ("input",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == handle, f.text
    assert f.unknown == ()


def test_without_it_the_rule_is_not_decided(rs: Ruleset) -> None:
    f = find_rule(rs, pkt(40000, None), ("input",), ("ip", "inet"))
    assert not f.established
    assert "ct original proto-dst == 7931" in f.unknown


def test_a_packet_without_an_entry_matches_no_ct_original_rule(rs: Ruleset) -> None:
    f = find_rule(rs, pkt(40000, None, state="invalid"), ("input",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == 7


def test_json_round_trip() -> None:
    t = CtTuple("ipv6", 58, ipaddress.ip_address("fd77::1"), ipaddress.ip_address("fd77::2"),
                icmp_id=7, icmp_type=128, icmp_code=0)
    assert t.to_json() == {"family": "ipv6", "proto": t.proto, "saddr": "fd77::1",
                           "daddr": "fd77::2", "icmp_id": 7, "icmp_type": 128, "icmp_code": 0}
    assert CtTuple.from_json(t.to_json()) == t
    u = CtTuple("ipv4", 17, A, B, 40000, 7931)
    assert CtTuple.from_json(u.to_json()) == u and str(u) == (
        "udp 10.77.135.1:40000 -> 10.77.135.2:7931")


def test_recordings_of_layout_3_carry_it_and_layout_2_still_reads() -> None:
    """Both recorded on 6.18 from one namespace (tests/data/record): its prerouting
    DNATs UDP to 7931 to 7932; 5 datagrams were sent to 7931, 3 to 7932. Layout 2 was
    written by kdbg before the tuple was read."""
    new = offline.load(DATA / "record" / "layout3.kdbg")
    assert new.rec.meta["layout"] == "kdbg_drop_record 3"
    drops = [d.event for d in new.drops()]
    assert {ev.dport for ev in drops} == {7932}
    assert Counter(ev.ct_original.dport for ev in drops if ev.ct_original) == {7931: 5,
                                                                               7932: 3}
    assert drops[0].to_json()["ct_original"]["sport"] == drops[0].sport
    old = offline.load(DATA / "record" / "layout2.kdbg")
    assert old.rec.meta["layout"] == "kdbg_drop_record 2"
    olds = [d.event for d in old.drops()]
    assert len(olds) == 8 and {ev.ct_original for ev in olds} == {None}
    assert {ev.ct_state for ev in olds} == {"new"} and all(ev.ct_status for ev in olds)
