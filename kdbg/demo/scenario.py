"""``kdbg demo``: a known drop workload, end to end, with nothing left behind.

The lab demo (the default) boots the default lab, adds a DROP rule in the guest,
sends traffic into it and runs ``kdbg watch --break``: drops, the breakpoint armed
at the drop site, the hit with its backtrace, the target resumed, the lab down.

The local demo builds two network namespaces joined by a veth pair, adds an
iptables DROP rule for UDP port 5555 in the receiver, sends 23 datagrams into
it while ``kdbg watch`` runs, and removes everything afterwards.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from kdbg import breakwatch, lab
from kdbg.breakwatch import BreakConfig, BreakOutcome, BreakSink
from kdbg.demo.throwaway import PY, SEND_UDP_CODE, VethLab
from kdbg.drops import Sink, WatchConfig, WatchResult, prepare
from kdbg.errors import LabError
from kdbg.trace.filters import PacketFilters

DEMO_PORT = 5555
DEMO_COUNT = 23


@dataclass(frozen=True)
class DemoResult:
    expected: int
    result: WatchResult


def run_local(sink: Sink, progress: Callable[[str], None], *, count: int = DEMO_COUNT,
              stack: bool = False) -> DemoResult:
    """Drops on the running kernel inside throw-away namespaces."""
    with VethLab(prefix="kdbgdemo", subnet=23) as veth:
        progress(f"namespaces {veth.a.name} ({veth.addr_a}) and {veth.b.name} ({veth.addr_b}) "
                 f"joined by veth-a/veth-b")
        veth.drop_udp(DEMO_PORT)
        progress(f"in {veth.b.name}: iptables -A INPUT -p udp --dport {DEMO_PORT} -j DROP")
        code = SEND_UDP_CODE.format(src=veth.addr_a, dst=veth.addr_b, sport=40000,
                                    dport=DEMO_PORT, count=count)
        send = shlex.join(["ip", "netns", "exec", veth.a.name, PY, "-c", code])
        progress(f"sending {count} UDP datagrams {veth.addr_a} -> {veth.addr_b}:{DEMO_PORT}, "
                 f"watching with: kdbg watch --reason NETFILTER_DROP --proto udp "
                 f"--dport {DEMO_PORT} --netns {veth.b.name} --stats")
        watch = prepare(WatchConfig(
            filters=PacketFilters(reasons=("NETFILTER_DROP",), proto="udp",
                                  dports=(DEMO_PORT,), netns=str(veth.b.path)),
            stats=True, events=True, stack=stack, cmd=send,
        ))
        result = watch.run(sink)
        progress("removing the namespaces")
    return DemoResult(count, result)


# -- the lab demo: the headline, end to end ------------------------------------

DEMO_LAB = "demo"
# In the guest: one datagram a second into the DROP rule, over loopback.
TRAFFIC = ["bash", "-c",
           f"while :; do echo kdbg > /dev/udp/127.0.0.1/{DEMO_PORT}; sleep 1; done"]


@dataclass(frozen=True)
class LabDemoResult:
    outcome: BreakOutcome
    booted: bool


def run_lab(sink: BreakSink, progress: Callable[[str], None], *, lab_name: str = DEMO_LAB,
            keep: bool = False, interactive: bool = False) -> LabDemoResult:
    """Boot the default lab, make NETFILTER_DROPs in it, break at the drop site, report
    the hit with its backtrace, resume, and tear everything down."""
    booted = False
    existing = lab.get(lab_name) if lab_name in {i.name for i in lab.status()} else None
    if existing is not None and existing.alive:
        progress(f"using the running lab {lab_name!r}")
    else:
        if existing is not None:
            lab.down(lab_name)  # a dead lab's state: clear it before booting again
        progress(f"booting lab {lab_name!r} (Debian's stock kernel under QEMU, gdb stub on)")
        lab.up(lab.LabConfig(name=lab_name), progress=progress)
        booted = True
    traffic = None
    try:
        done = lab.run(lab_name, ["sh", "-c",
                                  f"iptables -C INPUT -p udp --dport {DEMO_PORT} -j DROP "
                                  f"2>/dev/null || iptables -A INPUT -p udp --dport "
                                  f"{DEMO_PORT} -j DROP"])
        if done.status != 0:
            raise LabError(f"could not add the DROP rule in the guest: "
                           f"{done.stderr.decode(errors='replace').strip()}")
        progress(f"in the guest: iptables -A INPUT -p udp --dport {DEMO_PORT} -j DROP, "
                 f"and one datagram a second to 127.0.0.1:{DEMO_PORT}")
        traffic = lab.stream(lab_name, TRAFFIC)
        progress(f"kdbg watch --lab {lab_name} --reason NETFILTER_DROP --proto udp "
                 f"--dport {DEMO_PORT} --break")
        outcome = breakwatch.run(
            WatchConfig(filters=PacketFilters(reasons=("NETFILTER_DROP",), proto="udp",
                                              dports=(DEMO_PORT,)),
                        duration=600),
            BreakConfig(lab=lab_name, interactive=interactive),
            sink,
        )
    finally:
        if traffic is not None:
            traffic.close()  # the guest's agent kills the loop
        if booted and not keep:
            progress(f"stopping lab {lab_name!r}")
            lab.down(lab_name)
    return LabDemoResult(outcome, booted)
