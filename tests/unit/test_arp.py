"""ARP drops: decoded from the drop record (family 3, the operation in ``sport``), shown
and carried in JSON, counted in the kernel's "more" table, and the arp family's rules
decided on them (tests/data/nft/arp.nft, captured as arp.json and arp.txt)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from kdbg.causes.nftrules import Packet, Ruleset, find_rule
from kdbg.diagnose.report import example_json, example_text
from kdbg.drops.output import drop_line
from kdbg.trace import more
from kdbg.trace.event import Decoder, DropEvent
from kdbg.trace.layout import RawMoreKey
from tests.conftest import DATA
from tests.unit.test_event import KSYMS, REASONS, raw_v4

A, B = ipaddress.IPv4Address("10.77.138.1"), ipaddress.IPv4Address("10.77.138.2")


def arp_event(op: int = 1) -> DropEvent:
    r = raw_v4()
    r.protocol, r.family, r.l4proto, r.l4_valid, r.sport, r.dport = 0x0806, 3, 0, 0, op, 0
    r.saddr[:4] = list(A.packed)
    r.daddr[:4] = list(B.packed)
    return Decoder(REASONS, KSYMS).decode(r)


def test_an_arp_record_decodes_to_its_operation_sender_and_target() -> None:
    ev = arp_event()
    assert (ev.family, ev.proto, ev.arp_op, ev.saddr, ev.daddr) == ("arp", "arp", 1, A, B)
    assert (ev.sport, ev.dport, ev.icmp_type) == (None, None, None)
    rec = ev.to_json()
    assert (rec["arp_op"], rec["saddr"], rec["daddr"]) == ("request", str(A), str(B))
    assert DropEvent.from_json(rec) == ev
    assert drop_line(ev).endswith(" arp request")
    assert example_text(ev).startswith("arp request 10.77.138.1 -> 10.77.138.2 on veth-b")
    assert example_json(ev)["arp_op"] == "request"
    assert arp_event(9).to_json()["arp_op"] == "inreply"
    assert DropEvent.from_json(arp_event(77).to_json()).arp_op == 77


def test_an_ipv4_record_has_no_operation() -> None:
    ev = Decoder(REASONS, KSYMS).decode(raw_v4())
    assert ev.arp_op is None and "arp_op" not in ev.to_json()


def test_counted_arp_drops_keep_their_addresses() -> None:
    k = RawMoreKey()
    k.location, k.reason, k.family, k.sport = 0xFFFFFFFF81A003E8, 12, 3, 1
    k.saddr[:4] = list(A.packed)
    k.daddr[:4] = list(B.packed)
    m = more.decode(bytes(k), 5, REASONS.name, KSYMS.lookup)
    assert (m.family, m.proto, m.saddr, m.daddr, m.sport) == ("arp", "arp", A, B, None)


@pytest.fixture(scope="module")
def rs() -> Ruleset:
    nft = DATA / "nft"
    return Ruleset.from_json(json.loads((nft / "arp.json").read_text()),
                             (nft / "arp.txt").read_text())


def arp(op: int, src: str, dst: str) -> Packet:
    return Packet("arp", None, ipaddress.ip_address(src), ipaddress.ip_address(dst),
                  iifname="veth-b", arp_op=op)


@pytest.mark.parametrize("pkt, hook, handle", [
    (arp(2, "10.77.138.7", "10.77.138.2"), "input", 3),  # a reply from .7
    # htype, ptype (constants of what the program parses), operation and target
    (arp(1, "10.77.138.1", "10.77.138.2"), "input", 4),
    (arp(1, "10.77.138.1", "10.77.138.5"), "output", 8),  # a prefix
])
def test_the_arp_familys_rules_are_decided(rs: Ruleset, pkt: Packet, hook: str,
                                           handle: int) -> None:
    f = find_rule(rs, pkt, (hook,), ("arp",))
    assert f.established and f.rule is not None and f.rule.handle == handle, f.text
    assert f.rule.family == "arp"


def test_a_sender_ether_address_is_not_in_the_record(rs: Ruleset) -> None:
    # a reply from .1: not rule 3 (sender), not 4 (a request), not 7 (other operations);
    # rule 5 reads the sender's hardware address, which the drop record lacks, and is
    # named by elimination, saying what was not evaluated
    f = find_rule(rs, arp(2, "10.77.138.1", "10.77.138.2"), ("input",), ("arp",))
    assert f.established and f.rule is not None and f.rule.handle == 5
    assert f.unknown == ("arp saddr ether == 02:00:00:00:00:01",)
    assert "by elimination" in f.text


def test_an_inarp_operation_matches_its_set(rs: Ruleset) -> None:
    f = find_rule(rs, arp(8, "10.77.138.1", "10.77.138.2"), ("input",), ("arp",))
    assert not f.established  # rule 5 first: the sender's hardware address decides
    assert [c.handle for c in f.candidates] == [5, 7]


def test_a_request_and_a_reply_are_two_causes() -> None:
    """The rule evaluator reads the operation, so it is part of NETFILTER_DROP's cause
    key: a reply between the same addresses is not given a request's cached cause."""
    from kdbg.causes.finder import CauseFinder

    finder = CauseFinder(ttl=60)
    stack = ["nft_do_chain", "nft_do_chain_arp", "nf_hook_slow", "arp_rcv"]
    for op in (1, 2, 1, 2):
        finder.cause(arp_event(op), stack)
    assert finder.computed == 2
