"""ARP drops by the arp family's nftables rules, on the running kernel. In a throw-away
namespace pair, b's arp input chain drops ARP replies and, in a second rule, requests
for b's address; a's arp output chain drops a's requests for 10.77.N.9. Both forget
their neighbours (so neither probes the other on its own, outside the watch); then a
sends a datagram to b and to .9, and after that b one to a. The kernel's ARP probes for b and .9
are dropped, as many as it sends, and so are a's replies to b's probes. ``kdbg
diagnose`` must name each drop as an ARP request or reply with its sender and target,
at the arp family's input or output hook, list the hook functions there, and name the
exact rule, as many times as that rule's own counter says.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from typing import Any

import pytest

from kdbg.demo.throwaway import PY, VethLab

KDBG = [sys.executable, "-m", "kdbg"]

SEND = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for dst in {dsts!r}:
    s.sendto(b'kdbg', (dst, 9))
time.sleep(4)  # the kernel's probes: mcast_solicit (3) of them, 1 s apart
"""
INPUT = """table arp kdbgarp {{
 chain in {{
  type filter hook input priority 0; policy accept;
  arp operation reply counter drop
  arp operation request arp daddr ip {b} counter drop
 }}
}}
"""
OUTPUT = """table arp kdbgarp {{
 chain out {{
  type filter hook output priority 0; policy accept;
  arp daddr ip {c} counter drop
 }}
}}
"""


def counters(ns: Any) -> dict[int, int]:
    """Each rule's handle and its packet counter, from ``nft -a``."""
    text = ns.run(["nft", "-a", "list", "table", "arp", "kdbgarp"]).stdout
    return {int(h): int(n) for n, h in
            re.findall(r"counter packets (\d+) bytes \d+ drop # handle (\d+)", text)}


@pytest.fixture(scope="module")
def scene() -> dict[str, Any]:
    with VethLab(prefix="kdbgarp", subnet=137) as lab:
        a, b = lab.a, lab.b
        c = "10.77.137.9"
        b.run(["nft", "-f", "-"], input_=INPUT.format(b=lab.addr_b))
        a.run(["nft", "-f", "-"], input_=OUTPUT.format(c=c))
        a.run(["ip", "neigh", "flush", "dev", "veth-a"])
        b.run(["ip", "neigh", "flush", "dev", "veth-b"])
        # one after the other: b's request would teach a b's address, sparing a its own
        send = "; ".join(shlex.join(["ip", "netns", "exec", ns.name, PY, "-c",
                                     SEND.format(dsts=dsts)])
                         for ns, dsts in ((a, (lab.addr_b, c)), (b, (lab.addr_a,))))
        proc = subprocess.run([*KDBG, "diagnose", "--json", "--reason", "NETFILTER_DROP",
                               "--cmd", send], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        inodes = {name: int(ns.run(["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).stdout)
                  for name, ns in (("a", a), ("b", b))}
        found = {"a": counters(a), "b": counters(b)}
        recs = [json.loads(line) for line in proc.stdout.splitlines()]
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in recs:
        if rec["type"] != "diagnosis" or rec["example"]["netns"] not in inodes.values():
            continue
        side = "a" if rec["example"]["netns"] == inodes["a"] else "b"
        handle = (rec.get("rule") or {}).get("handle")
        assert handle is not None and (side, handle) not in groups, rec
        groups[(side, handle)] = rec
    return {"lab": {"a": lab.addr_a, "b": lab.addr_b, "c": c}, "counters": found,
            "groups": groups}


def test_every_arp_drop_is_named_to_its_rule_as_often_as_its_counter(
        scene: dict[str, Any]) -> None:
    for side, rules in scene["counters"].items():
        for handle, dropped in rules.items():
            rec = scene["groups"].get((side, handle))
            assert (rec["count"] if rec else 0) == dropped, (side, handle, dropped)
            if rec is not None:
                assert rec["established"] is True and rec["rule"]["family"] == "arp"


def test_a_request_dropped_at_arp_input_is_named_to_its_rule(scene: dict[str, Any]) -> None:
    addrs = scene["lab"]
    reply_rule, request_rule = sorted(scene["counters"]["b"])
    rec = scene["groups"].get(("b", request_rule))
    assert rec is not None, f"no drop named to b's request rule: {scene['groups']}"
    assert rec["count"] == scene["counters"]["b"][request_rule] > 0
    assert rec["hook"] == "input"
    ex = rec["example"]
    assert (ex["family"], ex["proto"], ex["arp_op"]) == ("arp", "arp", "request")
    assert (ex["saddr"], ex["daddr"]) == (addrs["a"], addrs["b"])
    assert (rec["hooks"]["family"], rec["hooks"]["hook"]) == ("arp", "input")
    assert [f["function"] for f in rec["hooks"]["functions"]] == ["nft_do_chain_arp"]


def test_a_reply_dropped_at_arp_input_is_named_to_its_rule(scene: dict[str, Any]) -> None:
    addrs = scene["lab"]
    reply_rule, _ = sorted(scene["counters"]["b"])
    rec = scene["groups"].get(("b", reply_rule))
    assert rec is not None, f"no drop named to b's reply rule: {scene['groups']}"
    assert rec["count"] == scene["counters"]["b"][reply_rule] > 0
    ex = rec["example"]
    assert (ex["arp_op"], ex["saddr"], ex["daddr"]) == ("reply", addrs["a"], addrs["b"])


def test_a_request_dropped_at_arp_output_is_named_to_its_rule(scene: dict[str, Any]) -> None:
    addrs = scene["lab"]
    (rule, dropped), = scene["counters"]["a"].items()
    rec = scene["groups"].get(("a", rule))
    assert rec is not None, f"no drop named to a's rule: {scene['groups']}"
    assert rec["count"] == dropped > 0 and rec["hook"] == "output"
    ex = rec["example"]
    assert (ex["arp_op"], ex["saddr"], ex["daddr"]) == ("request", addrs["a"], addrs["c"])
