"""The guard against a running lab guest (Debian 6.1 under QEMU): its own kallsyms,
BTF, kprobe blocklist and modules, read through the lab's exec channel, with the
lab's debug vmlinux for DWARF.

One lab is booted for the module, or the running one named in $KDBG_TEST_LAB is used.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kdbg.guard import TRANSPORTS, check
from kdbg.symbols.evidence import TargetSymbols
from kdbg.targetfacts import LabFacts


@pytest.fixture(scope="module")
def lab(default_lab: str) -> str:
    """The session's default lab (tests/vm/conftest.py)."""
    return default_lab


@pytest.fixture(scope="module")
def guest(lab: str) -> Iterator[TargetSymbols]:
    target = LabFacts(lab).symbols()
    yield target
    target.close()


def test_guest_evidence_is_all_there(guest: TargetSymbols) -> None:
    assert guest.btf is not None and guest.blocklist is not None and len(guest.blocklist) > 100
    assert guest.dwarf() is not None, guest.missing
    assert guest.kaslr_offset == 0  # the gdbstub lab boots with nokaslr


@pytest.mark.parametrize("name, rule, fact", [
    ("__udp4_lib_rcv", "kgdboe-networking", "net/ipv4/udp.c:"),
    ("tcp_v4_rcv", "kgdboe-networking", "net/ipv4/tcp_ipv4.c:"),
    ("kfree_skb_reason", "kgdboe-skb", "net/core/skbuff.c:"),
    ("mod_timer", "kgdboe-timer", "kernel/time/timer.c:"),
    ("__mod_timer", "kgdboe-timer", "kernel/time/timer.c:"),
])
def test_kgdboe_refuses_with_dwarf(guest: TargetSymbols, name: str, rule: str, fact: str) -> None:
    d = check(name, transport="kgdboe", symbols=guest)
    assert (d.verdict, d.rule, d.evidence.kind) == ("refuse", rule, "dwarf"), d
    assert d.evidence.fact.startswith(fact)


def test_module_symbol_is_judged_by_its_path(lab: str) -> None:
    from kdbg.lab import guest as lab_guest

    # nf_tables as a module, as after the first nft/iptables-nft rule; kallsyms is read live.
    lab_guest.run(lab, ["modprobe", "nf_tables"], timeout=60).check()
    target = LabFacts(lab).symbols()
    try:
        d = check("nft_do_chain", transport="kgdboe", symbols=target)
    finally:
        target.close()
    assert d.target.module == "nf_tables"
    assert (d.verdict, d.evidence.kind) == ("refuse", "module")
    assert "net/netfilter/nf_tables.ko" in d.evidence.fact


def test_blocklist_from_the_guest(guest: TargetSymbols) -> None:
    d = check("notify_die", transport="kgdboc", symbols=guest)
    assert (d.verdict, d.rule, d.evidence.kind) == ("refuse", "kprobe-blocklist", "blocklist")
    assert check("notify_die", transport="gdbstub", symbols=guest).verdict == "allow"


@pytest.mark.parametrize("name", ["do_sys_openat2", "vfs_read"])
def test_plain_code_allowed(guest: TargetSymbols, name: str) -> None:
    for transport in TRANSPORTS:
        d = check(name, transport=transport, symbols=guest)
        assert (d.verdict, d.evidence.kind) == ("allow", "dwarf"), d
