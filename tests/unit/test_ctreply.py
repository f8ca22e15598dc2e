"""The conntrack entry's reply tuple: decoded from the drop record, carried in JSON,
recordings (layout 4; layout 3 still read) and the pcapng's fields, and deciding
``ct reply`` rules."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter

import pytest

from kdbg.causes.nftrules import Packet, Ruleset, find_rule
from kdbg.record import offline, pcapng
from kdbg.trace.cttuple import CtTuple
from tests.conftest import DATA

A, B = ipaddress.ip_address("10.77.136.1"), ipaddress.ip_address("10.77.136.2")
A2 = ipaddress.ip_address("10.77.136.9")  # where a's postrouting source-NATs 7941


@pytest.fixture(scope="module")
def rs() -> Ruleset:
    """Captured from a namespace loaded with tests/data/nft/reply.nft."""
    nft = DATA / "nft"
    return Ruleset.from_json(json.loads((nft / "reply.json").read_text()),
                             (nft / "reply.txt").read_text())


def pkt(sport: int, dport: int, reply_to: ipaddress.IPv4Address | None) -> Packet:
    reply = CtTuple("ipv4", 17, B, reply_to, dport, sport) if reply_to is not None else None
    return Packet("ipv4", 17, A, B, sport, dport, ct_state="new", ct_reply=False,
                  ct_original=CtTuple("ipv4", 17, A, B, sport, dport), ct_reply_tuple=reply)


@pytest.mark.parametrize("sport, dport, reply_to, handle", [
    (40000, 7941, A2, 4),  # the packet shows a's own address; its entry's reply goes to A2
    (40001, 7942, A, 5),
    (40002, 7942, A, 6),
])
def test_the_reply_tuple_decides(rs: Ruleset, sport: int, dport: int,
                                 reply_to: ipaddress.IPv4Address, handle: int) -> None:
    f = find_rule(rs, pkt(sport, dport, reply_to), ("output",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == handle, f.text
    assert f.unknown == ()


def test_without_it_the_rules_are_not_decided(rs: Ruleset) -> None:
    f = find_rule(rs, pkt(40000, 7941, None), ("output",), ("ip", "inet"))
    assert not f.established
    assert {"ct reply ip daddr == 10.77.136.9", "ct reply proto-dst == 40001"} <= set(f.unknown)


def test_recordings_of_layout_4_carry_it_and_layout_3_still_reads() -> None:
    """tests/data/record/layout4.kdbg: recorded on 6.18 in a namespace loaded with
    tests/data/nft/reply.nft, 6 datagrams sent to 7941 from port 40000 (the first left),
    3 to 7942 from 40001 and 2 from 40002. layout3.kdbg was written before the reply
    tuple was read."""
    new = offline.load(DATA / "record" / "layout4.kdbg")
    assert new.rec.meta["layout"] == "kdbg_drop_record 4"
    drops = [d.event for d in new.drops()]
    assert Counter((ev.ct_reply_tuple.daddr, ev.ct_reply_tuple.dport)
                   for ev in drops if ev.ct_reply_tuple) == {(A2, 40000): 5, (A, 40001): 3,
                                                             (A, 40002): 2}
    assert all(ev.saddr == A and ev.ct_original is not None for ev in drops)
    rec = drops[0].to_json()["ct_reply_tuple"]
    assert rec == {"family": "ipv4", "proto": "udp", "saddr": str(B), "daddr": str(A2),
                   "sport": 7941, "dport": 40000}
    fields = pcapng.fields(drops[0], {})
    assert (fields["ct_reply_daddr"], fields["ct_reply_dport"]) == (str(A2), 40000)
    old = offline.load(DATA / "record" / "layout3.kdbg")
    assert old.rec.meta["layout"] == "kdbg_drop_record 3"
    olds = [d.event for d in old.drops()]
    assert len(olds) == 8 and {ev.ct_reply_tuple for ev in olds} == {None}
    assert all(ev.ct_original is not None for ev in olds)
