"""kdbg's commands at gdb's prompt, the parts that need no gdb (kdbg/prompt/), on what
gdb read at real stops (tests/data/prompt/: Debian 6.1 and 6.12 labs, iptables DROP on
UDP 5555, a sender on 127.0.0.1; journey.6.1.json: a datagram from one namespace through
a veth pair and a bridge into another's DROP rule, tests/vm/conftest.py journey_drops)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdbg.errors import BadInput
from kdbg.prompt import helplist, journeyview, modsyms, nftframe, skbview, state, where
from kdbg.trace.event import DropEvent
from kdbg.trace.headers import parse_headers
from tests.conftest import DATA

PROMPT = DATA / "prompt"


def test_skb_at_a_6_1_stop_without_conntrack() -> None:
    lines = skbview.replay(PROMPT / "skb.6.1.udp.json")
    assert lines == [
        "skb 0xff11000006b74d00: udp 127.0.0.1:34275 -> 127.0.0.1:5555, len 30",
        "  device     lo (ifindex 1)",
        "  netns      4026531840 (of the device)",
        "  protocol   ipv4 (ethertype 0x0800)",
        "  packet     udp 127.0.0.1:34275 -> 127.0.0.1:5555",
        "  length     30 (30 in the linear part)",
        "  mark       0x0",
        "  conntrack  none (skb->_nfct is 0: conntrack did not see this packet)",
        "  reason     NETFILTER_DROP ($rsi at the call to kfree_skb_reason at "
        "nft_do_chain+0x47a)",
    ]


@pytest.mark.parametrize(("name", "nf_conn", "register", "callee"), [
    ("skb.6.1.conntrack.json", "0xff1100000707a200", "$rsi", "kfree_skb_reason"),
    ("skb.6.12.conntrack.json", "0xff110000131aa900", "$rdx", "sk_skb_reason_drop"),
])
def test_skb_with_conntrack(name: str, nf_conn: str, register: str, callee: str) -> None:
    lines = skbview.replay(PROMPT / name)
    # skb->_nfct: the nf_conn, ctinfo IP_CT_NEW (2) in the low bits; the packet went out
    # and came back in on lo, so conntrack confirmed it on the way out
    assert f"  conntrack  NEW (ctinfo 2), nf_conn {nf_conn}, status CONFIRMED (0x8)" in lines
    assert lines[-1].startswith(f"  reason     NETFILTER_DROP ({register} at the call to {callee}")
    assert lines[0].endswith("-> 127.0.0.1:5555, len 30")


def test_recording_round_trip_and_its_parts() -> None:
    rec = json.loads((PROMPT / "skb.6.12.conntrack.json").read_text())
    mem = skbview.SkbMemory.from_json(rec["memory"])
    assert skbview.SkbMemory.from_json(mem.to_json()) == mem
    assert mem.nfct is not None and mem.nfct & skbview.NFCT_INFOMASK == 2
    assert skbview.ethertype(mem.protocol or 0) == 0x0800
    # the header bytes gdb read from skb->head + network_header: kdbg's own decoder
    assert parse_headers(mem.header, 0x0800) == {
        "family": "ipv4", "proto": "udp", "saddr": "127.0.0.1", "daddr": "127.0.0.1",
        "sport": 45699, "dport": 5555}
    bits = {int(k): v for k, v in rec["status_bits"].items()}  # from the kernel's DWARF
    assert bits[3] == "CONFIRMED" and not any(v.startswith("__") for v in bits.values())
    assert skbview.conntrack(7, None, bits) == "UNTRACKED (ctinfo 7)"
    assert skbview.conntrack(None, None, bits) == "not read"
    assert skbview.conntrack(mem.nfct, (1 << 3) | (1 << 1), bits).endswith(
        "status SEEN_REPLY|CONFIRMED (0xa)")


def test_journey_at_a_6_1_stop() -> None:
    """kdbg-journey's slot as gdb read it at a stop (before the drop): the hops, times
    before the last one, what changed, and nothing said incomplete."""
    rec = json.loads((PROMPT / "journey.6.1.json").read_text())
    lines = journeyview.replay(rec)
    assert lines[0] == ("skb 0xff1100000e21ab00: its journey, from slot 50 of the tracer's "
                        "journey table (0xffa000000188b870)")
    assert lines[1] == "journey (5 hops, oldest first; time before its last hop):"
    hops = [line.split() for line in lines[2:]]
    assert [h[0] for h in hops] == ["-0.117ms", "-0.084ms", "-0.049ms", "-0.015ms", "-0.000ms"]
    assert [(h[1], h[2], h[3], h[4], h[5]) for h in hops] == [
        ("4026532281", "(gj-a)", "veth-a", "veth", "net_dev_queue"),
        ("4026532333", "(gj-b)", "veth-b", "veth", "netif_rx"),
        ("4026532333", "(gj-b)", "veth-b", "veth", "netif_receive_skb"),
        ("4026532333", "(gj-b)", "br0", "bridge", "netif_receive_skb_entry"),
        ("4026532333", "(gj-b)", "br0", "bridge", "netif_receive_skb")]
    assert lines[2].endswith("10.77.95.1:38391 -> 10.77.95.2:5595 udp")
    assert lines[3].endswith("netns gj-a -> gj-b, device veth-a -> veth-b (veth)")
    assert lines[5].endswith("device veth-b -> br0 (bridge)")
    assert len(lines) == 7


def test_journey_without_a_table_is_one_line() -> None:
    with pytest.raises(BadInput, match="names no journey table"):
        journeyview.describe(b"", 0xFF1100000E21AB00, state.PromptState())


def test_skb_without_device_or_headers() -> None:
    mem = skbview.SkbMemory(0xFF11000000001000, len=40, data_len=40, sk=0xFF11000000002000,
                            netns=4026531840, netns_via="socket", notes=("mark not read",))
    lines = skbview.describe(mem)
    assert lines[0] == "skb 0xff11000000001000, len 40"
    assert "  device     none (skb->dev is NULL)" in lines
    assert "  netns      4026531840 (of the socket)" in lines
    assert "  packet     headers not decoded (0 bytes read)" in lines
    assert "  length     40 (0 in the linear part)" in lines
    assert lines[-1] == "  note       mark not read"


def _state() -> state.PromptState:
    return state.read(PROMPT / "state.6.1.json")


def test_state_file_reads_back() -> None:
    st = _state()
    assert st.transport == "gdbstub" and st.endpoint and st.endpoint.startswith("unix:")
    assert st.stop == state.StopPoint(0xFFFFFFFFC038654A, "nft_do_chain+0x47a",
                                      "kfree_skb_reason", 0xFF11000009432900, "NETFILTER_DROP")
    assert st.armed_by is not None and st.armed_by.dport == 5555
    assert st.armed_by.cause is not None and st.armed_by.cause.rule is not None
    assert st.armed_by.cause.rule.handle == 2
    (bp,) = st.breakpoints
    assert (bp.number, bp.address, bp.label) == (1, 0xFFFFFFFFC038654A, "nft_do_chain+0x47a")
    assert bp.decision == state.GuardVerdict(
        "allow", "gdbstub-external", "QEMU's gdb stub stops the whole VM from outside; nothing "
        "in the guest takes part", "gdbstub", False)
    assert st.module_roots == (Path("/root/.cache/kdbg/kernels/debian-6.1.0-57-amd64/debug/"
                                    "lib/modules/6.1.0-57-amd64"),)
    assert state.from_json({"version": 1}) == state.PromptState()


@pytest.mark.parametrize(("content", "error"), [
    (None, "cannot read"),
    ("{", "is not JSON"),
    ("[]", "not a kdbg state"),
    ('{"version": 2}', "state version 2: this kdbg reads version 1"),
    ('{"stop": {"address": "nft_do_chain"}}', '"stop.address" is not an address'),
    ('{"stop": {}}', '"stop" has no "address"'),
    ('{"armed_by": {"type": "drop"}}', '"armed_by" is not a drop record (KeyError'),
    ('{"breakpoints": [{"address": "0x1"}]}', 'a "breakpoints" entry without a number'),
    ('{"module_roots": "/x"}', '"module_roots" is not a list'),
])
def test_a_bad_state_file_is_one_line(tmp_path: Path, content: str | None, error: str) -> None:
    path = tmp_path / "state.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInput) as err:
        state.read(path)
    assert error in str(err.value) and "\n" not in str(err.value)


def test_where() -> None:
    lines = where.describe(_state(), in_gdb={1})
    text = "\n".join(lines)
    assert lines[0] == "the drop that armed the breakpoint:"
    assert "  location   nft_do_chain+0x47f [nf_tables] (net/netfilter/nf_tables_core.c:291)" \
        in lines
    assert "  packet     udp 127.0.0.1:55101 -> 127.0.0.1:5555, len 30" in lines
    assert "  netns      4026531840" in lines and "  interface  lo (ifindex 1)" in lines
    assert ("  cause      table ip filter chain INPUT rule handle 2: udp dport 5555 counter "
            "drop # handle 2") in lines
    assert ("stopped at nft_do_chain+0x47a (0xffffffffc038654a), at the call to "
            "kfree_skb_reason; skb 0xff11000009432900, reason NETFILTER_DROP") in lines
    assert "  1   nft_do_chain+0x47a (0xffffffffc038654a)" in lines
    assert "      guard: allow, rule gdbstub-external: QEMU's gdb stub stops" in text
    gone = where.describe(_state(), in_gdb=())
    assert "  1   nft_do_chain+0x47a (0xffffffffc038654a)  [no longer in gdb]" in gone
    assert where.describe(state.PromptState()) == ["no drop armed a breakpoint in this session",
                                                   "kdbg set no breakpoint"]


# What kdbg-rule read from nft_do_chain's frame at the 6.1 stop (frame #1: rule->handle 2,
# chain->name "INPUT", chain->table->name "filter", ->family 2) and at the 6.12 stop
# (frame #2, chain optimized out, found through priv's rule blob).
RULE_6_1 = nftframe.FrameRule(2, "filter", "INPUT", 2, 1, "its locals rule and chain",
                              ("meta", "cmp", "payload", "cmp", "counter", "immediate"))
RULE_6_12 = nftframe.FrameRule(2, "filter", "INPUT", 2, 2, "its local rule; chain optimized "
                               "out, priv's rule blob holds rule")


def _drop(path: Path) -> DropEvent:
    return DropEvent.from_json(json.loads(path.read_text().splitlines()[0]))


def test_rule_beside_kdbg_cause() -> None:
    cause = _state().armed_by.cause  # type: ignore[union-attr]
    lines = nftframe.describe(RULE_6_1, cause)
    assert lines == [
        "kernel: table ip filter chain INPUT rule handle 2   (nft_do_chain, frame #1: its "
        "locals rule and chain)",
        "        expressions: meta cmp payload cmp counter immediate",
        "kdbg:   table ip filter chain INPUT rule handle 2: udp dport 5555 counter drop # "
        "handle 2   (the cause kdbg printed, worked out from the ruleset)",
        "same rule",
    ]
    other = nftframe.FrameRule(2, "filter", "INPUT", 3, 1)
    assert nftframe.describe(other, cause)[-1].startswith("they differ: ")
    assert nftframe.describe(RULE_6_1, None)[-1].startswith("kdbg:   no cause")


def test_rule_settles_kdbg_candidates() -> None:
    # 6.12: kdbg could not tell 'ct state invalid' from 'udp dport 5555' from the drop
    cause = _drop(PROMPT / "drop.6.12.jsonl").cause
    assert cause is not None and cause.rule is None and len(cause.candidates) == 2
    lines = nftframe.describe(RULE_6_12, cause)
    assert lines[1] == "kdbg:   no single rule; its candidates were:"
    assert lines[-1] == "the kernel's frame settles it: table ip filter chain INPUT rule handle 2"
    outside = nftframe.FrameRule(2, "filter", "INPUT", 9, 2)
    assert nftframe.describe(outside, cause)[-1] == (
        "they differ: the kernel's rule is none of kdbg's candidates")


def test_policy_settles_kdbg_candidates() -> None:
    # 6.1, UDP to 5557: 'table ip pol' has policy drop and accepts all but that port. At the
    # stop nft_do_chain's rule had is_last set (past the chain's last rule): the policy.
    cause = _drop(PROMPT / "drop.6.1.policy.jsonl").cause
    assert cause is not None and len(cause.candidates) == 2
    policy = nftframe.FrameRule(2, "pol", "in", None, 1, "rule is past its chain's last rule: "
                                "the policy of the base chain (priv) decided")
    lines = nftframe.describe(policy, cause)
    assert lines[0].startswith("kernel: table ip pol chain in policy   (nft_do_chain, frame #1")
    assert "          the policy of table ip pol chain in (policy drop: no rule accepted the " \
           "packet)" in lines
    assert lines[-1] == "the kernel's frame settles it: table ip pol chain in policy"


def test_rule_names_families_as_nft_does() -> None:
    assert [nftframe.FrameRule(f, "t", "c", 1, 0).ref.family for f in (1, 2, 3, 5, 7, 10)] == [
        "inet", "ip", "arp", "netdev", "bridge", "ip6"]


def test_no_nft_frame_is_one_line() -> None:
    legacy = nftframe.not_in_nft(["kfree_skb_reason", "ipt_do_table", "iptable_filter_hook"])
    assert legacy.startswith("kdbg-rule: the stop is in ipt_do_table (frame #1: iptables-legacy")
    assert "local e (struct ipt_entry *)" in legacy
    assert "\n" not in legacy
    at_hook = ["kfree_skb_reason", "nf_hook_slow", "ip_local_deliver"]
    assert nftframe.not_in_nft(at_hook).endswith("after a hook function returned NF_DROP")
    assert nftframe.not_in_nft(at_hook, "ipt_do_table") == (
        "kdbg-rule: iptables-legacy: ipt_do_table returned NF_DROP to nf_hook_slow and its "
        "rule went with its frame; break in ipt_do_table to read it (its local e, struct "
        "ipt_entry *)")
    assert "an nftables base chain's policy" in nftframe.not_in_nft(at_hook,
                                                                      "nft_do_chain_ipv4")
    assert nftframe.not_in_nft(["tcp_v4_rcv"]).endswith("this stop is not in an nftables rule")


def _target() -> list[modsyms.TargetModule]:
    recs = json.loads((PROMPT / "modules.6.12.json").read_text())
    return [modsyms.TargetModule(m["name"], tuple((n, int(a, 16)) for n, a in m["sections"]))
            for m in recs]


def test_loaded_modules_from_gdb() -> None:
    loaded = modsyms.loaded_modules((PROMPT / "maint-sections.6.12.txt").read_text())
    names = [lm.name for lm in loaded]
    assert "vmlinux-6.12.118+deb12-amd64" not in names and len(loaded) == 11
    texts = {lm.name: lm.text for lm in loaded}
    assert texts["nf_tables"] == 0xFFFFFFFFC036D000
    target = {m.name: m.text for m in _target()}
    assert all(target[n] == t for n, t in texts.items())  # kdbg loaded them where they are


def test_lx_symbols_plan(tmp_path: Path) -> None:
    loaded = modsyms.loaded_modules((PROMPT / "maint-sections.6.12.txt").read_text())
    target = _target()
    files = {m.name: tmp_path / f"{m.name}.ko" for m in target}
    same = modsyms.plan(target, loaded, files)
    assert not same.remove and len(same.kept) == 11
    assert {m.name for m in same.load} == {m.name for m in target} - set(same.kept)
    # nf_tables moved, x_tables gone, xt_tcpudp in gdb twice
    moved = [modsyms.TargetModule(m.name, tuple((n, a + 0x100000 if m.name == "nf_tables" else a)
                                                for n, a in m.sections))
             for m in target if m.name != "x_tables"]
    twice = [*loaded, next(lm for lm in loaded if lm.name == "xt_tcpudp")]
    p = modsyms.plan(moved, twice, {"nf_tables": tmp_path / "nf_tables.ko"})
    assert {(lm.name, why) for lm, why in p.remove} == {
        ("nf_tables", "moved"), ("x_tables", "gone"), ("xt_tcpudp", "twice")}
    (nft,) = p.load
    assert nft.name == "nf_tables" and "nf_tables" not in p.kept and "xt_tcpudp" in p.kept
    # the .init sections, freed after init and reused by later modules, are left out
    assert ".init.text" in dict(nft.sections) and ".init" not in nft.gdb_command()
    assert nft.gdb_command().startswith(
        f"add-symbol-file {tmp_path}/nf_tables.ko 0xffffffffc046d000")
    dup = next(lm for lm, why in p.remove if why == "twice")
    assert modsyms.remove_command(dup, twice) == f"remove-symbol-file -a 0x{dup.text:x}"
    gone = next(lm for lm, why in p.remove if why == "gone")
    assert modsyms.remove_command(gone, twice) == f"remove-symbol-file {gone.path}"
    assert modsyms.report(p)[:2] == [
        "loaded: nf_tables (.text 0xffffffffc046d000)",
        "removed: nf_tables (moved), x_tables (gone), xt_tcpudp (twice)"]


def test_lx_symbols_finds_debug_files_under_roots(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "kernel/net").mkdir(parents=True)
    (second / "kernel").mkdir(parents=True)
    (first / "kernel/net/nf-tables.ko").write_bytes(b"")
    (second / "kernel/nf_tables.ko").write_bytes(b"")
    (second / "kernel/x_tables.ko").write_bytes(b"")
    files = modsyms.debug_files([first, second, tmp_path / "missing"])
    assert files == {"nf_tables": first / "kernel/net/nf-tables.ko",
                     "x_tables": second / "kernel/x_tables.ko"}


def test_help_kdbg_lists_kdbg_then_linux() -> None:
    cmds = helplist.commands((PROMPT / "help-all.6.12.txt").read_text())
    funcs = helplist.functions((PROMPT / "help-function.6.12.txt").read_text())
    assert cmds["backtrace"].startswith("Print backtrace")  # "backtrace, where, bt -- ..."
    text = helplist.listing(cmds, funcs)
    lines = text.splitlines()
    assert lines[0] == "kdbg's commands at this prompt:"
    ours = lines[1:lines.index("Linux's own gdb helpers (scripts/gdb of this kernel's source):")]
    assert [line.split()[0].rstrip(":") for line in ours] == [
        "kdbg-skb", "kdbg-rule", "kdbg-where", "kdbg-state", "kdbg-done", "kdbg-break",
        "kdbg-guard", "kdbg-sym", "kdbg-kallsyms", "lx-symbols"]
    assert "  lx-symbols -- kdbg's lx-symbols [PATH...]" in text
    assert "  lx-dmesg -- Print Linux kernel log buffer." in lines
    assert "  $lx_current() -- Return current task." in lines
    assert "  kdbg-skb [EXPR]: the stopped skb" in text
    bare = helplist.listing({k: v for k, v in cmds.items() if k.startswith("kdbg")}, {})
    assert bare.splitlines()[-1].startswith("Linux's own gdb helpers (lx-dmesg, lx-ps, "
                                            "$lx_current(), ...) are not loaded")
