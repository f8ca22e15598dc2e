"""Conntrack's own hook functions ruled out from the drop's conntrack facts
(kdbg.causes.conntrack), and ``nft list hooks`` as Debian's 6.12 printed it."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from kdbg.causes import conntrack, nfhooks
from kdbg.causes.conntrack import (
    IPS_CONFIRMED,
    IPS_HELPER,
    IPS_SEQ_ADJUST,
    IPS_TEMPLATE,
    InsertFailed,
    parse_stats,
    why_not,
)
from kdbg.causes.netfilter import blame
from kdbg.causes.netnsref import NetnsRef
from kdbg.trace.cause import HookFn, HookList
from kdbg.trace.event import DropEvent
from tests.conftest import DATA

NS = NetnsRef(4026532174, "/var/run/netns/kdbg-no-such-netns", "kdbg-no-such-netns")


def drop(state: str | None, status: int | None = 0, reply: bool = False) -> DropEvent:
    line = (DATA / "jsonl" / "causes.6.18.jsonl").read_text().splitlines()[0]
    ev = DropEvent.from_json(json.loads(line))
    return dataclasses.replace(ev, ct_state=state, ct_status=status, ct_reply=reply)


class Counted(InsertFailed):
    """A baseline and a later count given, not read (the reads are the kernel tier's)."""

    def __init__(self, before: int | None, now: int) -> None:
        super().__init__()
        if before is not None:
            self.before[NS.inode] = before
        self.now = now

    def unmoved(self, ns: NetnsRef) -> int | None:
        was = self.before.get(ns.inode)
        return self.now if was is not None and was == self.now else None


def test_conntrack_in_and_defrag_are_ruled_out_by_a_non_template_entry() -> None:
    for fn in ("ipv4_conntrack_in", "ipv6_conntrack_local", "ipv6_defrag"):
        assert why_not(fn, drop("new"), NS, Counted(0, 0)) == (
            f"{fn} never leaves a conntrack entry on a packet it drops, and this one "
            "carries one (ct state new)")
        assert why_not(fn, drop("invalid", None), NS, Counted(0, 0)) is None
        assert why_not(fn, drop("new", IPS_TEMPLATE), NS, Counted(0, 0)) is None
        assert why_not(fn, drop("new", None), NS, Counted(0, 0)) is None  # status unread
    assert why_not("ipt_do_table", drop("new"), NS, Counted(0, 0)) is None


def test_the_confirm_hook_is_ruled_out_only_by_what_it_cannot_drop() -> None:
    for fn in ("nf_confirm", "ipv4_confirm"):
        assert why_not(fn, drop("invalid", None), NS, Counted(None, 0)) is not None
        assert why_not(fn, drop("untracked", None), NS, Counted(None, 0)) is not None
        assert why_not(fn, drop("established", IPS_CONFIRMED, reply=True), NS,
                       Counted(None, 0)) == (
            f"{fn}: its conntrack entry has no helper and no sequence adjustment, and it "
            "accepts every packet of the reply direction")
        for bits in (IPS_HELPER, IPS_SEQ_ADJUST):
            assert why_not(fn, drop("established", bits, reply=True), NS, Counted(0, 0)) is None
        # original direction: only an unmoved insert_failed since the baseline rules it out
        assert why_not(fn, drop("new"), NS, Counted(None, 0)) is None
        assert why_not(fn, drop("new"), NS, Counted(3, 4)) is None
        assert why_not(fn, drop("new"), None, Counted(3, 3)) is None
        assert why_not(fn, drop("new"), NS, Counted(3, 3)) == (
            f"{fn}: its conntrack entry has no helper and no sequence adjustment, and the "
            "namespace's conntrack insert_failed stayed 3 from before the watch attached to "
            "after the drop")
        assert why_not(fn, drop("new", None), NS, Counted(3, 3)) is None


def test_a_confirmed_entry_needs_a_kernel_that_never_warned(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setattr(conntrack, "tainted_warn", lambda: True)
    assert why_not("nf_confirm", drop("new", IPS_CONFIRMED), NS, Counted(3, 3)) is None
    monkeypatch.setattr(conntrack, "tainted_warn", lambda: False)
    assert why_not("nf_confirm", drop("new", IPS_CONFIRMED), NS, Counted(3, 3)) is not None


def test_blame_names_each_function_ruled_out() -> None:
    hooks = HookList("ipv4", "prerouting", (
        HookFn(-400, "ipv4_conntrack_defrag", "nf_defrag_ipv4"),
        HookFn(-200, "ipv4_conntrack_in", "nf_conntrack"),
        HookFn(-150, "iptable_mangle_hook", "iptable_mangle", "mangle", "iptables")),
        "kernel memory", 3)
    ev = drop("new")
    fn, left, why = blame("nf_hook_slow", hooks,
                          lambda f: why_not(f.function, ev, NS, Counted(0, 0)))
    assert fn is not None and fn.function == "iptable_mangle_hook" and len(left) == 1
    assert why.count("never leaves a conntrack entry") == 2


def test_the_statistics_are_summed_over_the_cpus() -> None:
    text = (DATA / "nfhooks" / "nf_conntrack.stat").read_text()  # captured on 6.18
    stats = parse_stats(text)
    assert stats["entries"] == 1 and stats["insert_failed"] == 0
    two = text.replace("00000000 00000000 00000000 00000000  00000000",
                       "00000002 00000000 00000000 00000000  00000000")
    assert parse_stats(two)["insert_failed"] == 4  # the 10th column, on both CPUs


def test_the_baseline_reads_this_namespace() -> None:
    if not os.path.exists(conntrack.OWN_STAT_FILE):
        pytest.skip("conntrack is not loaded on this machine: no statistics to read")
    own = NetnsRef(os.stat("/proc/self/ns/net").st_ino, "/proc/self/ns/net", own=True)
    counts = InsertFailed()
    counts.baseline([own])
    assert counts.before[own.inode] == conntrack.read_insert_failed(own)


def test_nft_list_hooks_of_debian_6_12_agrees_with_kernel_memory() -> None:
    """Both captured in one 6.12 guest, in one namespace: ``nft list hooks`` (nfnetlink_hook
    as a module) and kdbg's read of the same hooks from kernel memory."""
    parsed = nfhooks.parse_nft_hooks((DATA / "nfhooks" / "nft-list-hooks.6.12.txt").read_text())
    memory = json.loads((DATA / "nfhooks" / "memory.6.12.json").read_text())
    assert set(parsed) == {tuple(k.split()) for k in memory}
    for key, fns in parsed.items():
        mem = memory[" ".join(key)]
        assert [f.priority for f in fns] == [m[0] for m in mem]
        assert [f.module for f in fns] == [m[2] for m in mem]
        for f, m in zip(fns, mem, strict=True):
            if f.kind == "nftables":
                assert m[4] == "nftables" and f.table is not None
            else:
                assert f.function == m[1]
    inp = parsed[("ipv4", "input")]
    assert [(f.priority, f.function) for f in inp] == [
        (-150, "iptable_mangle_hook"), (-10, "nft_do_chain (inet kdbgh in)"),
        (0, "ipt_do_table"), (2147483647, "nf_confirm")]
    assert inp[1].table == "inet kdbgh in" and inp[2].kind == "iptables"
    assert parsed[("ipv6", "input")][-1] == HookFn(2147483646, "nf_confirm", "nf_conntrack")


# enum nf_ip_hook_priorities as Debian 6.12's vmlinux BTF gives it (its x_tables entries)
PRIO_6_12 = {"NF_IP_PRI_RAW_BEFORE_DEFRAG": -450, "NF_IP_PRI_RAW": -300,
             "NF_IP_PRI_MANGLE": -150, "NF_IP_PRI_FILTER": 0, "NF_IP_PRI_SECURITY": 50}


def test_x_tables_named_by_priority_where_neither_source_names_them() -> None:
    parsed = nfhooks.parse_nft_hooks((DATA / "nfhooks" / "nft-list-hooks.6.12.txt").read_text())

    def prios(enum: str, prefix: str) -> dict[int, str]:
        assert (enum, prefix) == ("nf_ip_hook_priorities", "NF_IP_PRI_")
        return {v: nfhooks.XT_PRIORITY_TABLES[k[len(prefix):]] for k, v in PRIO_6_12.items()
                if k[len(prefix):] in nfhooks.XT_PRIORITY_TABLES}
    fns = parsed[("ipv4", "input")]
    named = nfhooks.name_xt_tables(HookList("ipv4", "input", fns, "nft list hooks", 4), prios)
    assert [(f.function, f.table) for f in named.functions] == [
        ("iptable_mangle_hook", "mangle"), ("nft_do_chain (inet kdbgh in)", "inet kdbgh in"),
        ("ipt_do_table", "filter"), ("nf_confirm", None)]
