"""A 6.12 lab (``--kernel debian:6.12``): Debian's newest 6.12 kernel under TCG, with
the tracer in the guest on borrowed 6.1 headers and ``watch --break`` on the 6.11+ drop
function, ``sk_skb_reason_drop``.

Same shape as test_watch_break.py: a DROP rule for UDP 5555 in the guest and a datagram
a second into it; kdbg's tracer runs in the guest, gdb reaches it through QEMU's stub.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.vm.conftest import (
    check_break_journey,
    check_the_stop,
    debian_612_lab,
    gdbs_on,
    journey_drops,
    kdbg_json,
    lab_name,
    netfilter_break,
    of,
    udp_drops,
)

NAME = lab_name("k612")
PORT = 5555


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    with debian_612_lab(NAME), udp_drops(NAME, PORT, every=1):
        yield NAME


def test_612_kernel_with_borrowed_headers(lab: str) -> None:
    """The guest runs 6.12; the agent linked the installed headers of another release
    for bcc (there are none for 6.12); the drop function is sk_skb_reason_drop."""
    from kdbg import lab as labmod
    from kdbg.debugger.dropsite import drop_function
    from kdbg.lab.debian import in_series
    from kdbg.symbols.kallsyms import Kallsyms

    release = labmod.get(lab).release
    assert in_series(release, "6.12"), release
    done = labmod.run(lab, ["readlink", f"/lib/modules/{release}/build"])
    assert done.status == 0, done.stderr
    target = done.stdout.decode().strip()
    assert target.startswith("/usr/src/linux-headers-") and "6.12" not in target, target
    names = Kallsyms.parse(labmod.kallsyms(lab)).names()
    assert drop_function(names) == "sk_skb_reason_drop"
    assert "kfree_skb_reason" not in names  # an inline wrapper since 6.11


def test_tracer_in_612_guest_counts_exact_drops(lab: str) -> None:
    """The guest's own kdbg on the 6.12 kernel: 23 datagrams into a DROP rule on another
    port, exactly 23 NETFILTER_DROP events with addresses, device and netns."""
    from kdbg import lab as labmod

    other = PORT + 7
    rule = ["INPUT", "-p", "udp", "--dport", str(other), "-j", "DROP"]
    assert labmod.run(lab, ["iptables", "-A", *rule]).status == 0
    send = f"for i in $(seq 23); do echo x > /dev/udp/127.0.0.1/{other}; done"
    try:
        done = labmod.run(lab, ["kdbg", "watch", "--json", "--reason", "NETFILTER_DROP",
                                "--proto", "udp", "--dport", str(other), "--count", "23",
                                "--cmd", f"bash -c '{send}'"], timeout=900)
    finally:
        labmod.run(lab, ["iptables", "-D", *rule])
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.status == 0, err
    recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    drops = of(recs, "drop")
    assert len(drops) == 23, err
    for d in drops:
        assert d["symbol"] == "nft_do_chain" and d["module"] == "nf_tables"
        assert d["dport"] == other and d["daddr"] == "127.0.0.1"
        assert isinstance(d["netns"], int) and d["netns"] > 0 and d["ifname"] == "lo"


def test_netfilter_drop_breaks_at_the_call_to_sk_skb_reason_drop(lab: str) -> None:
    rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--proto", "udp",
                              "--dport", str(PORT), "--break")
    assert rc == 0, err
    armed, hit = netfilter_break(recs, "sk_skb_reason_drop", PORT, err)  # 6.11+
    assert "<sk_skb_reason_drop>" in armed["instruction"]
    # sk_skb_reason_drop(sk, skb, reason): the skb, its second argument, was read right
    gdb_frames = [(f["symbol"], f.get("file")) for f in hit["backtrace"]]
    assert ("nft_do_chain", "net/netfilter/nf_tables_core.c") in gdb_frames, gdb_frames
    assert ("nf_hook_slow", "net/netfilter/core.c") in gdb_frames, gdb_frames
    cleanup = of(recs, "cleanup")
    assert cleanup and cleanup[-1]["ok"], cleanup
    # The target runs afterwards: drops still flow, and no gdb of ours is left.
    rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--count", "2")
    assert rc == 0, err
    assert len(of(recs, "drop")) == 2, err
    assert gdbs_on(lab) == []


def test_the_stop_on_612_is_a_kernel_developers_debugger(lab: str) -> None:
    """The same prompt on 6.12: its own linux-source-6.12, its own gdb scripts."""
    check_the_stop(lab, PORT)


def test_the_hit_on_612_carries_its_journey(lab: str) -> None:
    """The journey's hop programs and table on 6.12 (their offsets from its BTF): a
    datagram through a veth pair and a bridge into another namespace's DROP rule."""
    with journey_drops(lab, 5595, every=1) as inodes:
        check_break_journey(lab, 5595, inodes)
