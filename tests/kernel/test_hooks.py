"""NETFILTER_DROP's hook, read off a learned call chain, is the hook its own stack names:
on every hook, IPv4 and IPv6, in throw-away namespaces.

The drop program walks a NETFILTER_DROP's stack only until user space has learned its
call chain (kdbg/trace/chains.py); after that the cause's hook comes from the frames
the chain holds. Here the program also walks every stack (``check_chains``), so each
drop's cause (from its chain) is compared with the hook its full stack names.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kdbg.causes import netfilter
from kdbg.demo.throwaway import PY, Netns, RoutedLab
from kdbg.drops import WatchConfig, prepare
from kdbg.trace.event import DropEvent
from kdbg.trace.filters import PacketFilters
from kdbg.trace.more import Summarized

FIRST, THEN = 3, 7  # datagrams before the chain is learned, and after

SENDER = r"""
import socket, sys, time
flows = {flows!r}
for burst in ({first}, {then}):
    for src, dst, dport in flows:
        fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((src, 0))
        for i in range(burst):
            try:  # a drop at OUTPUT, POSTROUTING or egress fails the send (EPERM)
                s.sendto(b'kdbg-hook', (dst, dport))
            except OSError:
                pass
        s.close()
        if burst == {first}:
            time.sleep(0.03)  # the program sends a location's stack every 5 ms at most
    time.sleep(1.5)  # the first burst's stacks are learned meanwhile (a loaded machine: slower)
"""


@dataclass
class Sink:
    drops: list[DropEvent]

    def watching(self, message: str) -> None:
        pass

    def drop(self, event: DropEvent) -> None:
        self.drops.append(event)

    def more(self, summarized: Summarized) -> None:
        raise AssertionError(f"the ring overflowed: {summarized}")

    def stats(self, *_: object) -> None:
        pass

    def flush(self) -> None:
        pass

    def summary(self, *_: object) -> None:
        pass


def nft(ns: Netns, ruleset: str) -> None:
    ns.run(["nft", "-f", "-"], input_=ruleset)


def chains(family: str, *hooks: tuple[str, ...]) -> str:
    """A table ``k`` of ``family`` with one base chain per (hook, rules...)."""
    out = [f"table {family} k {{"]
    for i, (hook, *rules) in enumerate(hooks):
        out += [f" chain c{i} {{", f"  type filter hook {hook} priority 0;",
                *(f"  {rule}" for rule in rules), " }"]
    return "\n".join([*out, "}", ""])


def egress_supported(ns: Netns) -> bool:
    """Whether this kernel has netfilter's egress hook (CONFIG_NETFILTER_EGRESS)."""
    probe = subprocess.run(["ip", "netns", "exec", ns.name, "nft", "-f", "-"], text=True,
                           capture_output=True, input="table netdev probe {\n chain e {\n"
                           '  type filter hook egress device "veth-a" priority 0;\n }\n}\n')
    if probe.returncode == 0:
        ns.run(["nft", "delete", "table", "netdev", "probe"])
    return probe.returncode == 0


@pytest.fixture(scope="module")
def lab() -> Iterator[RoutedLab]:
    with RoutedLab(prefix="kdbghook", subnet=47) as lab:
        yield lab


def test_every_hook_from_a_chain_is_the_one_its_stack_names(lab: RoutedLab) -> None:
    nft(lab.b, chains("inet", ("prerouting", "udp dport 6101 drop", 'iif "lo" udp dport 6108 drop'),
                      ("input", "udp dport 6102 drop", 'iif "lo" udp dport 6109 drop')))
    nft(lab.b, chains("netdev", ('ingress device "veth-b"', "udp dport 6106 drop")))
    nft(lab.r, chains("inet", ("forward", "udp dport 6103 drop")))
    nft(lab.a, chains("inet", ("output", "udp dport 6104 drop"),
                      ("postrouting", "udp dport 6105 drop")))
    hooks = {6101: "prerouting", 6102: "input", 6103: "forward", 6104: "output",
             6105: "postrouting", 6106: "ingress", 6108: "prerouting", 6109: "input"}
    if egress_supported(lab.a):
        nft(lab.a, chains("netdev", ('egress device "veth-a"', "udp dport 6107 drop")))
        hooks[6107] = "egress"
    across = [(src, dst, port) for port in hooks if port < 6108
              for src, dst in ((lab.addr_a, lab.addr_b), (lab.addr6_a, lab.addr6_b))]
    local = [(src, src, port) for port in (6108, 6109) for src in ("127.0.0.1", "::1")]
    cmd = " && ".join(
        shlex.join(["ip", "netns", "exec", ns.name, PY, "-c",
                    SENDER.format(flows=flows, first=FIRST, then=THEN)])
        for ns, flows in ((lab.a, across), (lab.b, local)))
    sink = Sink([])
    watch = prepare(WatchConfig(filters=PacketFilters(reasons=("NETFILTER_DROP",),
                                                      dports=tuple(hooks)),
                                cmd=cmd, check_chains=True, buffer_pages=1024))
    result = watch.run(sink)
    assert result.cmd_status == 0

    flows = len(across) + len(local)
    got: dict[tuple[int, str | None], list[DropEvent]] = {}
    for ev in sink.drops:
        got.setdefault((ev.dport or 0, ev.family), []).append(ev)
    assert {k: len(v) for k, v in got.items()} == {
        (port, fam): FIRST + THEN for port in hooks for fam in ("ipv4", "ipv6")}
    for (port, _fam), evs in got.items():
        for ev in evs:
            assert ev.stack is not None and ev.cause is not None
            walked = netfilter.hook_of([f.symbol for f in ev.stack])[0]
            frames = [str(f) for f in ev.stack]
            assert walked == ev.cause.hook == hooks[port], (port, walked, frames)
            assert ev.cause.established, ev.cause.summary
    # The drops after the first burst took their frames from a chain, not their stack.
    assert result.chain_hits >= THEN * flows, (result.chain_hits, result.chains)
    assert result.summary.matched == result.summary.delivered == flows * (FIRST + THEN)
    print(f"\nhooks {sorted(set(hooks.values()))}; {result.chains} chains learned, "
          f"{result.chain_hits} of {flows * (FIRST + THEN)} drops read one")
