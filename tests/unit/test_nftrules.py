"""The ruleset evaluator on a real ``nft -j list ruleset`` (tests/data/nft, captured from
a namespace with iptables-nft tables, an inet table with a set, jumps and a reject, and
an ip table with a forward policy drop)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json

import pytest

from kdbg.causes import nftrules
from kdbg.causes.nftrules import Packet, Ruleset, find_rule, rule_texts
from tests.conftest import DATA

NFT = DATA / "nft"


@pytest.fixture(scope="module")
def rs() -> Ruleset:
    return Ruleset.from_json(json.loads((NFT / "ruleset.json").read_text()),
                             (NFT / "ruleset.txt").read_text())


def udp4(dport: int, saddr: str = "10.77.9.1", daddr: str = "10.77.9.2", sport: int = 40000,
         iif: str | None = "veth-b") -> Packet:
    return Packet("ipv4", 17, ipaddress.ip_address(saddr), ipaddress.ip_address(daddr),
                  sport, dport, iifname=iif)


def test_rule_texts_are_nfts_lines_by_handle(rs: Ruleset) -> None:
    texts = rule_texts((NFT / "ruleset.txt").read_text())
    assert texts[("ip", "filter", "INPUT", 2)] == "udp dport 5555 counter drop # handle 2"
    assert texts[("inet", "web", "checks", 13)] == \
        'iifname "veth*" udp dport 6666 counter drop # handle 13'
    assert set(texts) == rs.handles()  # every rule of the JSON has its text, nothing more


def test_two_flows_two_rules_each_named_by_handle_and_text(rs: Ruleset) -> None:
    a = find_rule(rs, udp4(5555), ("input",), ("ip", "inet"))
    assert a.established and a.rule is not None
    assert a.rule.to_json() == {"family": "ip", "table": "filter", "chain": "INPUT",
                                "handle": 2, "text": "udp dport 5555 counter drop # handle 2"}
    b = find_rule(rs, udp4(6666), ("input",), ("ip", "inet"))
    assert b.established and b.rule is not None
    assert (b.rule.table, b.rule.chain, b.rule.handle) == ("web", "checks", 13)
    # ip filter (priority 0) decides 5555 before inet web (10) is reached; 6666 passes
    # the ct state rule, which kdbg cannot evaluate: followed both ways, the drop decides.
    assert a.unknown == ()
    assert b.unknown == ("ct state in established,related",) and "by elimination" in b.text


def test_named_set_of_prefixes(rs: Ruleset) -> None:
    f = find_rule(rs, udp4(1234, saddr="192.0.2.99"), ("input",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == 5


def test_reject_is_a_drop_and_return_skips_the_rest_of_the_chain(rs: Ruleset) -> None:
    f = find_rule(rs, udp4(7000), ("input",), ("ip", "inet"))
    assert f.rule is not None and f.rule.handle == 10
    # From port 53, 'checks' returns before the 6666 rule: nothing drops it.
    g = find_rule(rs, udp4(6666, sport=53), ("input",), ("ip", "inet"))
    assert not g.established and g.rule is None
    assert "no rule or policy in the current ruleset drops this packet" in g.text


def test_interface_wildcard(rs: Ruleset) -> None:
    f = find_rule(rs, udp4(6666, iif="eth0"), ("input",), ("ip", "inet"))
    assert not f.established


def test_ipv6_rule_in_inet_table(rs: Ruleset) -> None:
    pkt = Packet("ipv6", 17, ipaddress.ip_address("fd77:9::1"), ipaddress.ip_address("fd77:9::2"),
                 40000, 6005, iifname="veth-b")
    f = find_rule(rs, pkt, ("input",), ("ip6", "inet"))
    assert f.established and f.rule is not None
    assert (f.rule.family, f.rule.table, f.rule.handle) == ("inet", "web", 8)
    assert f.rule.text == "ip6 daddr fd77:9::2 udp dport 6000-6010 counter drop # handle 8"
    # The same port over IPv4 is not matched by 'ip6 daddr'.
    assert not find_rule(rs, udp4(6005), ("input",), ("ip", "inet")).established


def test_chain_policy_drop(rs: Ruleset) -> None:
    f = find_rule(rs, udp4(80, daddr="192.168.1.1"), ("forward",), ("ip", "inet"))
    assert f.established and f.rule is not None
    assert f.rule.to_json() == {"family": "ip", "table": "strict", "chain": "forwarding",
                                "policy": "drop"}
    # An accepted destination is not dropped there.
    assert not find_rule(rs, udp4(80, daddr="10.1.1.1"), ("forward",), ("ip",)).established


def test_two_candidates_behind_an_unknown_expression_are_not_guessed(rs: Ruleset) -> None:
    # 'meta mark 0x2a drop' then 'udp dport 9999 drop': the mark is not in the drop record.
    f = find_rule(rs, udp4(9999, iif=None), ("output",), ("ip", "inet"))
    assert not f.established and f.rule is None
    assert {c.handle for c in f.candidates} == {4, 5}
    assert f.text.startswith("cause not established: 2 rules could have dropped it")
    assert "meta mark" in f.text
    # Any other port can only be the mark rule: by elimination.
    g = find_rule(rs, udp4(1, iif=None), ("output",), ("ip", "inet"))
    assert g.established and g.rule is not None and g.rule.handle == 4
    assert "by elimination" in g.text


def test_iptables_extension_is_not_evaluated(rs: Ruleset) -> None:
    pkt = Packet("ipv6", 6, ipaddress.ip_address("fd77:9::1"), ipaddress.ip_address("fd77:9::2"),
                 40000, 1, iifname="veth-b")
    f = find_rule(rs, pkt, ("input",), ("ip6", "inet"))
    # ip6 filter INPUT handle 2 uses xt multiport: the only drop candidate for TCP here.
    assert f.established and f.rule is not None and f.rule.handle == 2
    assert "xt match multiport" in f.unknown


def test_rule_fingerprint_ignores_counters(rs: Ruleset) -> None:
    rule = rs.rule(("ip", "filter", "INPUT", 2))
    assert rule is not None
    moved = json.loads(json.dumps(rule.expr).replace('"packets": 0', '"packets": 23'))
    assert nftrules.Rule("ip", "filter", "INPUT", 2, moved).fingerprint() == rule.fingerprint()


@pytest.fixture(scope="module")
def maps() -> Ruleset:
    return Ruleset.from_json(json.loads((NFT / "maps.json").read_text()),
                             (NFT / "maps.txt").read_text())


def test_verdict_maps_anonymous_and_named(maps: Ruleset) -> None:
    f = find_rule(maps, udp4(9, saddr="10.0.0.1"), ("input",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == 6
    assert f.rule.text == "ip saddr vmap { 10.0.0.1 : drop, 10.0.0.2 : accept } # handle 6"
    g = find_rule(maps, udp4(4001), ("input",), ("ip", "inet"))
    assert g.rule is not None and g.rule.handle == 7
    # 4002 is accepted by the map: nothing after it drops it.
    assert not find_rule(maps, udp4(4002), ("input",), ("ip", "inet")).established


def test_a_limit_is_followed_both_ways_and_goto_returns_to_the_policy(maps: Ruleset) -> None:
    f = find_rule(maps, udp4(4003), ("input",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == 8
    assert f.unknown == ("limit",)
    g = find_rule(maps, udp4(4004), ("input",), ("ip", "inet"))
    assert g.rule is not None and (g.rule.chain, g.rule.handle) == ("sub", 12)
    # From sport 1, sub returns; after a goto that ends the base chain: policy accept.
    assert not find_rule(maps, udp4(4004, sport=1), ("input",), ("ip", "inet")).established


def test_a_nat_chain_runs_only_for_a_connections_first_packet(maps: Ruleset) -> None:
    f = find_rule(maps, udp4(4006, iif=None), ("output",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == 13
    assert "nat chain nat_out run" in f.text


# -- the mark and conntrack state the drop record carries (tests/data/nft/marks.*,
# captured from a namespace loaded with marks.nft, the kernel test's ruleset) --------

@pytest.fixture(scope="module")
def marks() -> Ruleset:
    return Ruleset.from_json(json.loads((NFT / "marks.json").read_text()),
                             (NFT / "marks.txt").read_text())


def marked(dport: int, mark: int | None, ct: str | None, proto: int = 17,
           zone: int | None = 0, ct_mark: int | None = 0) -> Packet:
    return Packet("ipv4", proto, ipaddress.ip_address("10.77.9.1"),
                  ipaddress.ip_address("10.77.9.2"), 40000, dport, iifname="veth-b",
                  mark=mark, ct_state=ct, ct_zone=zone, ct_mark=ct_mark)


@pytest.mark.parametrize("dport, mark, ct, proto, zone, ct_mark, table, handle", [
    (7400, 5, "new", 17, 0, 0, "kdbgm", 7),  # marked 5 by the prerouting rule
    (7500, 0, "new", 17, 0, 0, "kdbgm", 8),
    (7600, 0, "established", 17, 0, 0, "kdbgm", 9),
    (7700, 0, "invalid", 6, None, None, "kdbgm", 10),  # no entry: no zone, no mark
    (8200, 0, "new", 17, 3, 0, "kdbgz", 6),  # zone 3, set before conntrack
    (8300, 0, "new", 17, 0, 7, "kdbgz", 7),  # the entry marked 7 at prerouting
])
def test_mark_and_conntrack_decide_exactly(marks: Ruleset, dport: int, mark: int, ct: str,
                                           proto: int, zone: int | None,
                                           ct_mark: int | None, table: str,
                                           handle: int) -> None:
    f = find_rule(marks, marked(dport, mark, ct, proto, zone, ct_mark), ("input",),
                  ("ip", "inet"))
    assert f.established and f.rule is not None
    assert (f.rule.table, f.rule.handle) == (table, handle)
    assert f.unknown == () and "by elimination" not in f.text


def test_without_them_the_same_drop_is_not_established(marks: Ruleset) -> None:
    """A record made before kdbg read them: the issue's two candidates."""
    f = find_rule(marks, marked(7500, None, None, zone=None, ct_mark=None), ("input",),
                  ("ip", "inet"))
    assert not f.established
    assert {(r.table, r.handle) for r in f.candidates} == {
        ("kdbgm", 7), ("kdbgm", 8), ("kdbgz", 6), ("kdbgz", 7)}
    assert f.unknown == ("ct mark == 7", "ct state in established", "ct state in invalid",
                         "ct state in new", "ct zone == 3", "meta mark == 5")


def test_a_state_no_rule_drops_is_not_blamed_on_one(marks: Ruleset) -> None:
    f = find_rule(marks, marked(7600, 0, "new"), ("input",), ("ip", "inet"))
    assert not f.established and f.rule is None


def test_only_the_limit_stays_undecided(marks: Ruleset) -> None:
    f = find_rule(marks, marked(7800, 0, "new"), ("input",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == 11
    assert f.unknown == ("limit",)


def test_before_conntrack_the_state_is_not_taken_from_the_drop(marks: Ruleset) -> None:
    """A raw-priority chain runs before conntrack: the drop's state is not what it saw."""
    f = find_rule(marks, marked(7900, 0, "invalid"), ("prerouting",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == 5
    assert f.unknown == ("ct state in invalid",)
    assert nftrules.ct_known("input", marks.chains[("inet", "kdbgm", "in")])
    assert not nftrules.ct_known("prerouting", marks.chains[("inet", "kdbgm", "raw")])
    assert nftrules.ct_known("prerouting", marks.chains[("inet", "kdbgm", "pre")])


def test_a_mark_set_at_the_drops_hook_is_not_taken_from_the_drop(marks: Ruleset) -> None:
    """With a rule at input that sets the mark, the drop's mark may be that rule's."""
    doc = json.loads((NFT / "marks.json").read_text())
    doc["nftables"].insert(len(doc["nftables"]), {"rule": {
        "family": "inet", "table": "kdbgm", "chain": "in", "handle": 99,
        "expr": [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 5}}]}})
    rs = Ruleset.from_json(doc, (NFT / "marks.txt").read_text())
    f = find_rule(rs, marked(7500, 5, "new"), ("input",), ("ip", "inet"))
    assert not f.established and {(r.table, r.handle) for r in f.candidates} == {
        ("kdbgm", 7), ("kdbgm", 8)}
    assert f.unknown == ("meta mark == 5",)
    # the output chain's mark rule is at another hook: input keeps the drop's mark
    g = find_rule(marks, marked(7500, 5, "new"), ("input",), ("ip", "inet"))
    assert g.established and g.rule is not None and (g.rule.table, g.rule.handle) == (
        "kdbgm", 7)


def test_a_ct_mark_set_at_the_drops_hook_is_not_taken_from_the_drop() -> None:
    doc = json.loads((NFT / "marks.json").read_text())
    doc["nftables"].append({"rule": {
        "family": "inet", "table": "kdbgz", "chain": "in", "handle": 99,
        "expr": [{"mangle": {"key": {"ct": {"key": "mark"}}, "value": 7}}]}})
    rs = Ruleset.from_json(doc, (NFT / "marks.txt").read_text())
    f = find_rule(rs, marked(8300, 0, "new", ct_mark=7), ("input",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.table == "kdbgz"
    assert f.unknown == ("ct mark == 7",) and "by elimination" in f.text


# -- ct direction (tests/data/nft/direction.*, captured on 6.18: a reply-direction rule
# for UDP to 7610, then a plain drop of it) ---------------------------------------------

@pytest.mark.parametrize("ct, reply, handle", [
    ("established", True, 2),  # a reply to a flow b started
    ("new", False, 3),
    ("invalid", None, 3),  # no entry: 'ct direction' breaks the rule, the next drops
])
def test_ct_direction_decides_exactly(ct: str, reply: bool | None, handle: int) -> None:
    rs = Ruleset.from_json(json.loads((NFT / "direction.json").read_text()),
                           (NFT / "direction.txt").read_text())
    pkt = dataclasses.replace(marked(7610, 0, ct, zone=None, ct_mark=None), ct_reply=reply)
    f = find_rule(rs, pkt, ("input",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == handle
    assert f.unknown == () and "by elimination" not in f.text


def test_ct_direction_unknown_without_the_entrys_direction() -> None:
    rs = Ruleset.from_json(json.loads((NFT / "direction.json").read_text()),
                           (NFT / "direction.txt").read_text())
    f = find_rule(rs, marked(7610, 0, None, zone=None, ct_mark=None), ("input",),
                  ("ip", "inet"))
    assert not f.established and {r.handle for r in f.candidates} == {2, 3}
    assert f.unknown == ("ct direction == reply",)


# -- ct status (tests/data/nft/status.*, captured on 6.18: a prerouting DNAT of UDP to
# 7620, then at input `ct status dnat drop` and a plain drop of UDP to 7622) -------------

def status_rules() -> Ruleset:
    return Ruleset.from_json(json.loads((NFT / "status.json").read_text()),
                             (NFT / "status.txt").read_text())


@pytest.mark.parametrize("dport, ct, status, handle", [
    # IPS_DST_NAT | IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE: the DNAT'd flow, now to 7621
    (7621, "new", (1 << 5) | (1 << 7) | (1 << 8), 4),
    (7622, "new", (1 << 7) | (1 << 8), 5),  # NAT done, nothing rewritten
    (7622, "invalid", None, 5),  # no entry: the status rule does not match
])
def test_ct_status_flag_decides_exactly(dport: int, ct: str, status: int | None,
                                        handle: int) -> None:
    pkt = dataclasses.replace(marked(dport, 0, ct, zone=None, ct_mark=None), ct_status=status)
    f = find_rule(status_rules(), pkt, ("input",), ("ip", "inet"))
    assert f.established and f.rule is not None and f.rule.handle == handle
    assert f.unknown == () and "by elimination" not in f.text


def test_ct_status_unknown_without_the_entrys_status() -> None:
    f = find_rule(status_rules(), marked(7622, 0, "new", zone=None, ct_mark=None),
                  ("input",), ("ip", "inet"))
    assert not f.established and {r.handle for r in f.candidates} == {4, 5}
    assert f.unknown == ("ct status in dnat",)
    # only a flag test is decided: an exact value is followed both ways
    assert nftrules.match({"op": "==", "left": {"ct": {"key": "status"}}, "right": "dnat"},
                          marked(7622, 0, "new"), {}, ("inet", "kdbgs")) is None


def test_before_dnat_the_status_is_not_taken_from_the_drop() -> None:
    """At prerouting a chain at or below -100 ran before the nat chain set the DNAT bits
    of a connection's first packet."""
    rs = status_rules()
    early = nftrules.Chain("inet", "kdbgs", "early", 9, "prerouting", -150)
    late = nftrules.Chain("inet", "kdbgs", "late", 10, "prerouting", -50)
    assert not nftrules.nat_known("prerouting", early) and nftrules.nat_known("prerouting", late)
    assert nftrules.nat_known("input", rs.chains[("inet", "kdbgs", "in")])
