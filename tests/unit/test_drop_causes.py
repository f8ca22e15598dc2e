"""Causes without a kernel: the notes table against the 6.1 and 6.18 reason tables,
the socket-table parser on a captured /proc/net, and hooks from stacks."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import json
import os
import string

import pytest

from kdbg import diagnose
from kdbg.causes import CauseFinder, meaning, notes, registry, sockets
from kdbg.causes.netfilter import (
    HOOK_FRAMES,
    HookAt,
    devices,
    hook_at,
    hook_depth,
    hook_of,
    stack_hook,
)
from kdbg.drops import Summary, read_jsonl
from kdbg.symbols import tpformat
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace.cause import Cause
from kdbg.trace.event import DropEvent
from tests.conftest import DATA

# The reasons most seen on real systems (the kernel's core list): each must have notes.
MOST_SEEN = (  # noqa: SIM905
    "NOT_SPECIFIED NO_SOCKET SOCKET_FILTER SOCKET_RCVBUFF SOCKET_BACKLOG PKT_TOO_SMALL "
    "TCP_CSUM UDP_CSUM ICMP_CSUM NETFILTER_DROP OTHERHOST IP_CSUM IP_INHDR IP_RPFILTER "
    "IP_NOPROTO PROTO_MEM TCP_FLAGS TCP_ZEROWINDOW TCP_OLD_DATA TCP_OVERWINDOW TCP_OFOMERGE "
    "TCP_RESET TCP_INVALID_SYN TCP_CLOSE TCP_OLD_ACK TCP_OFO_DROP IP_OUTNOROUTES "
    "IP_INNOROUTES NEIGH_FAILED NEIGH_QUEUEFULL QDISC_DROP CPU_BACKLOG XDP TC_INGRESS "
    "TC_EGRESS UNHANDLED_PROTO DEV_READY NOMEM PKT_TOO_BIG IPV6DISABLED"
).split()


def table(version: str) -> ReasonTable:
    text = (DATA / f"kfree_skb.format.{version}").read_text()
    return ReasonTable.from_tpformat(tpformat.parse(text, "skb", "kfree_skb"))


@pytest.mark.parametrize("version", ["6.1", "6.18"])
def test_most_seen_reasons_have_notes_on_both_kernels(version: str) -> None:
    t = table(version)
    names = {r.name for r in t}
    assert len(MOST_SEEN) >= 30
    for name in MOST_SEEN:
        assert name in names, (version, name)
        got = notes.notes_for(name)
        assert got is not notes.GENERIC, name
        assert got.meaning and got.causes and got.confirm and got.advice


def test_keyed_by_name_resolved_by_the_kernel() -> None:
    # The same notes, whatever number the kernel gives the reason.
    old, new = table("6.1"), table("6.18")
    assert old.code("NO_SOCKET") == 2 and new.code("NO_SOCKET") == 3
    assert notes.notes_for(old.name(2)) is notes.notes_for(new.name(3))
    assert notes.notes_for(new.name(3)).meaning.startswith("no socket")


def test_every_name_in_the_table_is_a_real_reason() -> None:
    known = {r.name for r in table("6.1")} | {r.name for r in table("6.18")}
    assert set(notes.TABLE) - known == set()


def test_confirm_templates_fill_from_the_drop_or_show_a_stand_in() -> None:
    fields = {f for n in notes.TABLE.values() for t in (n.confirm, n.advice)
              for _, f, _, _ in string.Formatter().parse(t) if f}
    assert fields <= set(notes.FILLERS)
    rp = notes.TABLE["IP_RPFILTER"]
    assert notes.fill(rp.confirm, {"ifname": "veth-b", "saddr": "10.77.9.1"}) == (
        "sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.veth-b.rp_filter; "
        "ip route get 10.77.9.1")
    assert "DEV" in notes.fill(rp.confirm, {"ifname": None})
    assert notes.notes_for("SOME_NEW_REASON") is notes.GENERIC


def test_proc_net_tables_parse() -> None:
    socks = sockets.parse_dump((DATA / "nft" / "proc_net.txt").read_text())
    got = {(s.proto, s.family, str(s.addr), s.port, s.receiving) for s in socks}
    assert got == {("tcp", "ipv4", "0.0.0.0", 8080, True), ("tcp", "ipv6", "::1", 22, True),
                   ("udp", "ipv4", "127.0.0.1", 7777, True), ("udp", "ipv6", "::", 5353, True)}
    udp = next(s for s in socks if s.port == 7777)
    assert udp.drops == 0 and udp.listener().to_json()["endpoint"] == "udp 127.0.0.1:7777"
    # Who would take a packet: the exact address, a wildcard, the v6 wildcard for v4.
    v4 = ipaddress.ip_address("10.77.9.2")
    assert not udp.accepts("ipv4", v4)
    assert udp.accepts("ipv4", ipaddress.ip_address("127.0.0.1"))
    v6any = next(s for s in socks if s.port == 5353)
    assert v6any.accepts("ipv4", v4) and v6any.accepts("ipv6", ipaddress.ip_address("fd77::2"))


def test_hook_from_the_stack() -> None:
    # Frames as a 6.18 drop's stack names them (innermost first).
    stack = ["sk_skb_reason_drop", "nft_do_chain", "nft_do_chain_inet", "nf_hook_slow",
             "ip_local_deliver", "ip_rcv", "__netif_receive_skb_one_core"]
    assert hook_of(stack) == ("input", ("inet",))
    assert hook_of(["kfree_skb_reason", "nf_hook_slow", "ip_forward", "ip_rcv"]) == \
        ("forward", None)
    assert hook_of(["nf_hook_slow", "__ip6_local_out", "ip6_send_skb"])[0] == "output"
    assert hook_of(["nf_hook_slow", None, "tcp_v4_rcv"]) == (None, None)
    assert set(HOOK_FRAMES.values()) == {"prerouting", "input", "forward", "output",
                                         "postrouting", "ingress", "egress"}



def test_bridge_hooks_from_the_stack() -> None:
    # Frames of real 6.18 drops in a bridge's namespace (innermost first, cut below the
    # frame that decides). An nftables bridge forward chain's drop:
    fwd = ["sk_skb_reason_drop", "nft_do_chain", "nft_do_chain_bridge", "nf_hook_slow",
           "__br_forward", "br_handle_frame_finish", "br_nf_hook_thresh",
           "br_nf_pre_routing_finish", "br_nf_pre_routing", "br_handle_frame",
           "__netif_receive_skb_core.constprop.0"]
    assert hook_at(fwd) == HookAt("forward", ("bridge",), 6, "bridge")
    assert stack_hook(fwd) == "bridge forward" and hook_depth(fwd) == 6
    # a bridge prerouting chain's, run by br_handle_frame itself
    pre = ["sk_skb_reason_drop", "nft_do_chain", "nft_do_chain_bridge", "br_handle_frame",
           "__netif_receive_skb_core.constprop.0"]
    assert hook_at(pre) == HookAt("prerouting", ("bridge",), 4, "bridge")
    # iptables' FORWARD, run by br_netfilter for the bridged packet: IPv4's hook
    ipt = ["sk_skb_reason_drop", "nf_hook_slow", "br_nf_forward_ip.part.0", "nf_hook_slow",
           "__br_forward", "br_handle_frame_finish"]
    assert hook_at(ipt) == HookAt("forward", None, 3, "br_netfilter")
    assert stack_hook(ipt) == "br_netfilter forward"
    # __br_forward for a frame the bridge device sent is the bridge's output
    out = ["nft_do_chain", "nft_do_chain_bridge", "nf_hook_slow", "__br_forward",
           "br_dev_xmit", "dev_hard_start_xmit"]
    assert hook_at(out) == HookAt("output", ("bridge",), 5, "bridge")
    # neither caller seen: forward, and every frame counts
    assert hook_at(["nf_hook_slow", "__br_forward"]) == HookAt("forward", None, None, "bridge")


def test_devices_a_bridge_chain_matches() -> None:
    assert devices(HookAt("forward", None, 1, "bridge"), "br-b") == (None, "br-b")
    assert devices(HookAt("prerouting", None, 1, "bridge"), "br-a") == ("br-a", None)
    assert devices(HookAt("forward", None, 1, "br_netfilter"), "br-b") == (None, None)
    assert devices(HookAt("forward", None, 1), "eth0") == ("eth0", None)

def captured() -> list[DropEvent]:
    recs = read_jsonl((DATA / "jsonl" / "causes.6.18.jsonl").read_text().splitlines())
    return [DropEvent.from_json(r) for r in recs if r["type"] == "drop"]


def test_causes_survive_the_json_round_trip() -> None:
    for line in (DATA / "jsonl" / "causes.6.18.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "drop":
            assert rec["cause"]["summary"]
            assert DropEvent.from_json(rec).to_json() == rec


def test_diagnosis_groups_a_captured_run_by_cause() -> None:
    sink = diagnose.Collector(io.StringIO())
    for ev in captured():
        sink.drop(ev)
    groups = sorted(sink.groups.values(), key=lambda g: (-g.count, g.first_ns))
    d = diagnose.Diagnosis(groups, Summary(103, 103, 0, 103), 5.0, 0, False)
    recs = [json.loads(line) for line in diagnose.report_json(d)]
    got = [(r["reason"], r["example"]["dport"], r["count"]) for r in recs[:-1]]
    assert got == [("NETFILTER_DROP", 5555, 23), ("SOCKET_RCVBUFF", 8000, 22),
                   ("NO_SOCKET", 7777, 17), ("NETFILTER_DROP", 6666, 13),
                   ("NETFILTER_DROP", 7001, 11), ("NETFILTER_DROP", 6001, 7),
                   ("IP_RPFILTER", 9000, 5), ("UDP_CSUM", 9100, 3), ("PKT_TOO_SMALL", 9200, 2)]
    assert recs[-1] == {"type": "summary", "matched": 103, "shown": 103, "summarized": 0,
                        "lost": 0, "causes": 9, "seconds": 5.0}
    pol = recs[4]
    assert pol["rule"] == {"family": "ip", "table": "pol", "chain": "in", "policy": "drop"}
    assert pol["type"] == "diagnosis" and pol["advice"] and pol["confirm"].startswith(
        "ip netns exec blue-b nft")
    text = diagnose.report_text(d).splitlines()
    assert text[0] == "kdbg: 103 drops, 9 causes, in 5.0 s"
    assert text[2].startswith("    23 x NETFILTER_DROP  (")
    assert text[3] == ("    cause:   table ip filter chain INPUT rule handle 2: "
                       "udp dport 5555 counter drop # handle 2")


def test_a_vanished_namespace_is_said_plainly() -> None:
    ev = captured()[0]  # its namespace was deleted when the capture ended
    rec = CauseFinder().cause(ev, ["nft_do_chain", "nf_hook_slow", "ip_local_deliver"])
    assert rec.established is False
    assert rec.summary == (f"cause not established: network namespace {ev.netns} no longer "
                           "exists (no name under /var/run/netns and no process in it)")
    assert rec.rule is None and "rule" not in rec.to_json()


def test_nft_missing_is_said_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    own = os.stat("/proc/self/ns/net").st_ino
    ev = dataclasses.replace(captured()[0], netns=own)
    monkeypatch.setenv("PATH", "/nonexistent")
    rec = CauseFinder().cause(ev, ["nft_do_chain", "nf_hook_slow", "ip_local_deliver"])
    assert rec.summary == "cause not established: nft is not installed"
    assert rec.established is False
    assert rec.hook == "input"  # what was known before the read failed stays


def test_one_computation_per_cause_key() -> None:
    finder = CauseFinder(ttl=60)
    events = [e for e in captured() if e.reason in ("UDP_CSUM", "PKT_TOO_SMALL")]
    assert len(events) == 5
    for ev in events:
        finder.cause(ev)
    assert finder.computed == 2  # both keys: (reason, netns, ifname)


def test_a_break_hit_names_the_rule() -> None:
    from kdbg.breakwatch import Hit
    from kdbg.breakwatch.report import BreakJsonSink, BreakTextSink
    from kdbg.debugger.model import Stop

    cause = next(e.cause for e in captured() if e.dport == 6666)
    assert cause is not None
    stop = Stop("breakpoint-hit", 0xFFFFFFFF81FBD0AA, "nft_do_chain", 0x46A, breakpoint=1)
    hit = Hit(1, stop, None, kernel_stack=("nft_do_chain+0x46f",), cause=cause)
    out = io.StringIO()
    BreakTextSink(out, io.StringIO()).hit(hit)
    assert ("    cause: table inet kdbgt chain checks rule handle 8: "
            'iifname "veth*" udp dport 6666 counter drop # handle 8') in out.getvalue()
    out = io.StringIO()
    BreakJsonSink(out, io.StringIO()).hit(hit)
    assert json.loads(out.getvalue())["cause"]["rule"]["handle"] == 8


def test_the_event_with_its_cause_is_a_new_equal_event() -> None:
    from kdbg.causes.finder import _replaced

    ev = dataclasses.replace(captured()[0], cause=None)
    cause = Cause(ev.reason, summary="x")
    new = _replaced(ev, cause)
    assert new == dataclasses.replace(ev, cause=cause)
    assert new is not ev and ev.cause is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.cause = None  # type: ignore[misc]


def test_one_entry_per_cause_and_the_stack_switch_follows_the_registry() -> None:
    reasons = [r for f in registry.REGISTRY for r in f.reasons]
    assert len(reasons) == len(set(reasons))  # one entry per reason
    known = {r.name for r in table("6.1")} | {r.name for r in table("6.18")}
    assert set(reasons) <= known
    assert all(notes.notes_for(r) is not notes.GENERIC for r in reasons)
    fields = {f.name for f in dataclasses.fields(DropEvent)}
    assert all(set(f.key) <= fields for f in registry.REGISTRY)
    assert set(registry.OTHER_KEY) <= fields
    assert registry.stack_reasons() == {"NETFILTER_DROP"}
    assert CauseFinder.needs_stack("NETFILTER_DROP") and not CauseFinder.needs_stack("NO_SOCKET")


def test_the_cache_key_is_the_reason_netns_stack_and_the_entrys_fields() -> None:
    ev = captured()[0]
    stack = ["nft_do_chain", "nf_hook_slow", "ip_local_deliver"]
    assert registry.cache_key(ev, stack) == (
        "NETFILTER_DROP", ev.netns, "input", ev.symbol, ev.family, ev.proto, ev.saddr,
        ev.daddr, ev.sport, ev.dport, ev.icmp_type, ev.icmp_code, ev.ifname, ev.mark,
        ev.ct_state, ev.ct_reply, ev.ct_zone, ev.ct_mark, ev.ct_status, ev.ct_original,
        ev.ct_reply_tuple, ev.arp_op)
    assert registry.cache_key(ev, None)[2] is None
    # the mark and conntrack state decide rules too: another of either, another key
    marked = dataclasses.replace(ev, mark=5, ct_state="new", ct_reply=False, ct_zone=3,
                                 ct_mark=7, ct_status=8)
    assert registry.cache_key(marked, stack)[-9:-1] == (5, "new", False, 3, 7, 8, None, None)
    # and an ARP packet's operation
    assert registry.cache_key(dataclasses.replace(ev, arp_op=2), stack)[-1] == 2
    no_socket = dataclasses.replace(ev, reason="NO_SOCKET")
    assert registry.cache_key(no_socket, stack) == (
        "NO_SOCKET", ev.netns, ev.family, ev.proto, ev.daddr, ev.dport)
    assert registry.cache_key(dataclasses.replace(ev, reason="UDP_CSUM"), None) == (
        "UDP_CSUM", ev.netns, ev.ifname)


def test_kdbg_reasons_and_the_causes_read_one_table() -> None:
    assert meaning("NO_SOCKET") == notes.notes_for("NO_SOCKET").meaning
    assert meaning("SOME_NEW_REASON") == ""
    cause = next(e.cause for e in captured() if e.reason == "UDP_CSUM")
    assert cause is not None and cause.meaning == meaning("UDP_CSUM")


def test_conntrack_is_known_to_a_bridge_chain_after_br_netfilter() -> None:
    from kdbg.causes.nftrules import Chain, ct_known, nat_known

    def chain(hook: str, prio: int) -> Chain:
        return Chain("bridge", "t", "c", 1, hook, prio)
    # prerouting: br_netfilter (NF_BR_PRI_BRNF, 0) runs IPv4's conntrack and NAT
    assert not ct_known("prerouting", chain("prerouting", -200))
    assert not ct_known("prerouting", chain("prerouting", 0))
    assert ct_known("prerouting", chain("prerouting", 10))
    assert not nat_known("prerouting", chain("prerouting", -100))
    # forward and output come after it (output after IP's own output)
    assert ct_known("forward", chain("forward", -300))
    assert ct_known("output", chain("output", -300))
    # an inet chain at -100 of prerouting is after conntrack's -200
    assert ct_known("prerouting", Chain("inet", "t", "c", 1, "prerouting", -100))
