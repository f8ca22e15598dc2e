"""The hooks at a drop: bpf/nf_hooks.h and its mirror, ``nft list hooks`` parsed, nftables'
functions named after their chains, the blame on a non-nftables hook function, and the
cause's JSON. The hook lists below are the ones kdbg read from this project's 6.18 host
(tests/kernel/test_nfhooks.py reads them again there)."""

from __future__ import annotations

import ctypes as ct
import re

from kdbg.causes import nfhooks
from kdbg.causes.netfilter import blame, blamed, xt_drops
from kdbg.causes.netnsref import NetnsRef
from kdbg.causes.reads import NetnsReads
from kdbg.dirs import BPF_DIR
from kdbg.trace.cause import Cause, HookFn, HookList
from tests.conftest import DATA
from tests.unit.cheaders import header_fields, mirror

NFT = HookFn(-10, "nft_do_chain_inet", None, None, "nftables")
IPT = HookFn(0, "ipt_do_table", None, "filter", "iptables")
CONFIRM = HookFn(2147483647, "nf_confirm")
INPUT = HookList("ipv4", "input", (NFT, IPT, CONFIRM), "kernel memory", 3)
MANGLE = HookFn(-150, "iptable_mangle_hook", None, "mangle", "iptables")
# a namespace that does not exist: reading its tables fails, so no table is ruled out
NS = NetnsRef(4026532174, "/var/run/netns/kdbg-no-such-netns", "kdbg-no-such-netns")


def test_layout_matches_header() -> None:
    assert header_fields("nf_hooks.h", "kdbg_nf_hook") == mirror(nfhooks.RawNfHook)
    assert header_fields("nf_hooks.h", "kdbg_nf_hooks", {
        "struct kdbg_nf_hook": nfhooks.RawNfHook}) == mirror(nfhooks.RawNfHooks)
    text = (BPF_DIR / "nf_hooks.h").read_text()
    consts = {k: int(v) for k, v in re.findall(r"#define (KDBG_NF_\w+) (\d+)", text)}
    assert (consts["KDBG_NF_HOOKS_MAX"], consts["KDBG_NF_NAMESIZ"]) == (
        nfhooks.MAX_HOOKS, nfhooks.NAMESIZ)
    assert (consts["KDBG_NF_ERR_NET"], consts["KDBG_NF_ERR_ENTRIES"]) == (
        nfhooks.ERR_NET, nfhooks.ERR_ENTRIES)
    assert ct.sizeof(nfhooks.RawNfHooks) == 32 + 32 * 64


def test_the_program_takes_every_offset_it_names() -> None:
    """Each placeholder of bpf/nf_hooks.bpf.c is one the layout fills."""
    names = set(re.findall(r"\{\{(\w+)\}\}", nfhooks.TEMPLATE.read_text()))
    assert names == {*nfhooks.FIELDS, "ENTRY_SIZE", "XT_TABLE_NAME"}


def test_slot_offsets_follow_the_kernels_arrays() -> None:
    # struct net's offsets as this host's BTF gives them
    layout = {"ARR_ipv4": 2672, "ARRLEN_ipv4": 5, "ARR_arp": 2752, "ARRLEN_arp": 3,
              "ARR_bridge": -1, "ARRLEN_bridge": 0, "HOOK_prerouting": 0, "HOOK_input": 1,
              "HOOK_forward": 2, "HOOK_output": 3, "HOOK_postrouting": 4}
    assert nfhooks.slot_offset(layout, "ipv4", "input") == 2680
    assert nfhooks.slot_offset(layout, "ipv4", "postrouting") == 2672 + 32
    # ARP's hooks are NF_ARP_IN (0), NF_ARP_OUT (1), NF_ARP_FORWARD (2), not inet's
    assert nfhooks.slot_offset(layout, "arp", "input") == 2752
    assert nfhooks.slot_offset(layout, "arp", "output") == 2752 + 8
    assert nfhooks.slot_offset(layout, "arp", "prerouting") is None
    assert nfhooks.slot_offset(layout, "bridge", "input") is None  # no bridge family
    assert nfhooks.slot_offset(layout, "ipv4", "ingress") is None  # per device


# In the format of nftables' print_hooks (src/mnl.c): kdbg has not run on a kernel with
# nfnetlink_hook, so this text is written to that format, not captured.
NFT_LIST_HOOKS = """family ip {
\thook prerouting {
\t\t-0000000400 ipv4_conntrack_defrag [nf_defrag_ipv4]
\t\t-0000000200 ipv4_conntrack_in [nf_conntrack]
\t}
\thook input {
\t\t-0000000010 chain inet t c [nf_tables]
\t\t 0000000000 ipt_do_table [ip_tables]
\t\t+2147483647 nf_confirm [nf_conntrack]
\t}
}
"""


def test_nft_list_hooks_parsed_in_order() -> None:
    hooks = nfhooks.parse_nft_hooks(NFT_LIST_HOOKS)
    assert set(hooks) == {("ipv4", "prerouting"), ("ipv4", "input")}
    assert hooks[("ipv4", "input")] == (
        HookFn(-10, "nft_do_chain (inet t c)", "nf_tables", "inet t c", "nftables"),
        HookFn(0, "ipt_do_table", "ip_tables", None, "iptables"),
        HookFn(2147483647, "nf_confirm", "nf_conntrack"))
    assert [f.priority for f in hooks[("ipv4", "prerouting")]] == [-400, -200]
    assert nfhooks.parse_nft_hooks("") == {}


def test_nftables_functions_are_named_after_their_chains() -> None:
    chains = [("inet", "t", "c", "input", -10), ("inet", "t", "pre", "prerouting", -10),
              ("ip", "t", "c4", "input", -10)]
    named = nfhooks.label_chains(INPUT, chains)
    assert named.functions[0].table == "inet t c"  # not ip's chain, nor prerouting's
    assert named.functions[1:] == (IPT, CONFIRM)
    two = nfhooks.label_chains(INPUT, [*chains, ("inet", "u", "d", "input", -10)])
    assert two.functions[0].table == "inet t c or inet u d"


def test_blame_by_elimination_needs_one_other_function() -> None:
    alone = HookList("ipv4", "input", (NFT, IPT), "kernel memory", 2)
    fn, others, why = blame("nf_hook_slow", alone)
    assert (fn, others) == (IPT, (IPT,))
    assert why.startswith("by elimination")
    fn, others, why = blame("nf_hook_slow", INPUT)
    assert (fn, others, why) == (None, (IPT, CONFIRM), "")


def test_blame_on_the_function_the_drop_is_in() -> None:
    fn, _others, why = blame("ipt_do_table", INPUT)
    assert fn == IPT and why == "the drop is in its code"
    assert blame("ipt_do_table.cold", INPUT)[0] == IPT


def test_the_blamed_cause_names_the_tool_to_confirm_with() -> None:
    alone = HookList("ipv4", "input", (IPT,), "kernel memory", 1)
    cause = blamed(NetnsReads(), Cause("NETFILTER_DROP", established=False), alone,
                   "nf_hook_slow", NS)
    assert cause.established and cause.dropped_by == IPT
    assert cause.summary == (
        "dropped by the hook function ipt_do_table (iptables filter, priority 0) at the input "
        "hook (ipv4): by elimination: the only hook function at the input hook that can drop "
        "this packet: nftables' chains do not")
    assert cause.confirm == ("ip netns exec kdbg-no-such-netns iptables-legacy -t filter -L "
                             "-v -n --line-numbers")
    other = blamed(NetnsReads(), Cause("NETFILTER_DROP", established=False), INPUT,
                   "nf_hook_slow", NS)
    assert other.established is False and other.dropped_by is None
    assert other.summary is not None and other.summary.endswith(
        "one of 2 other hook functions there that can drop it returned drop: ipt_do_table "
        "(iptables filter, priority 0); nf_confirm (priority 2147483647)")


def test_an_iptables_table_without_drop_rules_is_ruled_out() -> None:
    """iptables-legacy-save output of this host's iptables 1.8.9: filter drops UDP to 5599
    in INPUT and has a user chain that rejects; mangle drops in PREROUTING only, then
    also by FORWARD's policy."""
    filt = (DATA / "xt" / "filter.save").read_text()
    mangle = (DATA / "xt" / "mangle.save").read_text()
    policy = (DATA / "xt" / "mangle-policy.save").read_text()
    assert xt_drops(filt, "INPUT")
    assert xt_drops(filt, "OUTPUT")  # its user chain's REJECT may be jumped to
    assert xt_drops(mangle, "PREROUTING") and not xt_drops(mangle, "INPUT")
    assert not xt_drops(mangle, "POSTROUTING")
    assert xt_drops(policy, "FORWARD") and not xt_drops(policy, "INPUT")
    both = HookList("ipv4", "input", (MANGLE, NFT, IPT), "kernel memory", 3)
    fn, left, why = blame("nf_hook_slow", both, lambda f: (
        "iptables mangle has no DROP or REJECT rule for input and accepts by policy"
        if f.table == "mangle" else None))
    assert (fn, left) == (IPT, (IPT,))
    assert why == ("by elimination: the only hook function at the input hook that can drop "
                   "this packet: nftables' chains do not, and iptables mangle has no DROP or "
                   "REJECT rule for input and accepts by policy")


def test_hooks_survive_the_json_round_trip() -> None:
    cause = Cause("NETFILTER_DROP", established=True, hook="input", hooks=INPUT,
                  dropped_by=IPT)
    rec = cause.to_json()
    assert rec["hooks"]["functions"][1] == {"priority": 0, "function": "ipt_do_table",
                                            "module": None, "kind": "iptables",
                                            "table": "filter"}
    assert Cause.from_json(rec) == cause
