"""``kdbg demo``: a known drop workload, end to end, with nothing left behind.

The local demo builds two network namespaces joined by a veth pair, adds an
iptables DROP rule for UDP port 5555 in the receiver, sends 23 datagrams into
it while ``kdbg watch`` runs, and removes everything afterwards.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from kdbg.netns import PY, SEND_UDP_CODE, VethLab
from kdbg.watch import Sink, WatchConfig, WatchResult, prepare

DEMO_PORT = 5555
DEMO_COUNT = 23


@dataclass(frozen=True)
class DemoResult:
    expected: int
    result: WatchResult


def run_local(sink: Sink, progress: Callable[[str], None], *, count: int = DEMO_COUNT,
              stack: bool = False) -> DemoResult:
    """Drops on the running kernel inside throw-away namespaces."""
    with VethLab(prefix="kdbgdemo", subnet=23) as lab:
        progress(f"namespaces {lab.a.name} ({lab.addr_a}) and {lab.b.name} ({lab.addr_b}) "
                 f"joined by veth-a/veth-b")
        lab.drop_udp(DEMO_PORT)
        progress(f"in {lab.b.name}: iptables -A INPUT -p udp --dport {DEMO_PORT} -j DROP")
        code = SEND_UDP_CODE.format(src=lab.addr_a, dst=lab.addr_b, sport=40000,
                                    dport=DEMO_PORT, count=count)
        send = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", code])
        progress(f"sending {count} UDP datagrams {lab.addr_a} -> {lab.addr_b}:{DEMO_PORT}, "
                 f"watching with: kdbg watch --reason NETFILTER_DROP --proto udp "
                 f"--dport {DEMO_PORT} --netns {lab.b.name} --stats")
        watch = prepare(WatchConfig(
            reasons=("NETFILTER_DROP",), proto="udp", dports=(DEMO_PORT,),
            netns=str(lab.b.path), stats=True, events=True, stack=stack, cmd=send,
        ))
        result = watch.run(sink)
        progress("removing the namespaces")
    return DemoResult(count, result)
