"""The stopped packet's journey on the default lab (Debian 6.1 under TCG): in the guest,
two namespaces joined by a veth pair whose end is a bridge port (tests/vm/conftest.py
``journey_drops``), a DROP rule in the second and a datagram a second from the first.
``kdbg watch --break`` reports each drop's journey and the hit's, ending where the drop
is; at gdb's prompt ``kdbg-journey`` prints the stopped skb's. The 6.12 lab's turn is in
test_lab_612.py."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import JOURNEY_NS, Prompt, check_break_journey, journey_drops

PORT = 5595


@pytest.fixture(scope="module")
def lab(default_lab: str) -> Iterator[tuple[str, dict[str, int]]]:
    with journey_drops(default_lab, PORT, every=1) as inodes:
        yield default_lab, inodes


def test_the_hit_carries_its_journey(lab: tuple[str, dict[str, int]]) -> None:
    check_break_journey(lab[0], PORT, lab[1])


def test_kdbg_journey_at_the_prompt(lab: tuple[str, dict[str, int]]) -> None:
    """At a real prompt, kdbg-journey reads the stopped skb's slot from the guest's
    memory: its hops, times before its last hop, what changed; --record keeps it."""
    name, inodes = lab
    p = Prompt(name, PORT)
    try:
        assert "journey (5 hops, oldest first; time before its last hop):" in p.banner
        out = p.run("kdbg-journey")
        skb = p.run("p/x $kdbg_skb").split("=")[-1].strip()
        with tempfile.TemporaryDirectory() as tmp:
            recorded = Path(tmp) / "journey.json"
            p.run(f"kdbg-journey --record {recorded}")
            rec = json.loads(recorded.read_text())
        status = p.done()
    finally:
        p.close()
    assert status == 0, p.transcript[-3000:]
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"skb {skb}: its journey, from slot "), out
    assert lines[1] == "journey (5 hops, oldest first; time before its last hop):", out
    a, b = (f"{inodes[f'{JOURNEY_NS}-{x}']} ({JOURNEY_NS}-{x})" for x in "ab")
    assert re.match(rf"\s+-\d+\.\d{{3}}ms  {re.escape(a)}\s+veth-a\s+veth\s+net_dev_queue\s+"
                    rf"10\.77\.95\.1:\d+ -> 10\.77\.95\.2:{PORT} udp$", lines[2]), out
    assert lines[3].endswith(f"netns {JOURNEY_NS}-a -> {JOURNEY_NS}-b, device veth-a -> "
                             "veth-b (veth)"), out
    assert b in lines[4] and lines[5].endswith("device veth-b -> br0 (bridge)"), out
    assert lines[6].split()[-1] == "netif_receive_skb" and lines[6].lstrip().startswith(
        "-0.000ms"), out
    assert len(lines) == 7, out  # complete: no "incomplete:" line
    assert rec["skb"] == skb and len(bytes.fromhex(rec["slot"])) == 1840
