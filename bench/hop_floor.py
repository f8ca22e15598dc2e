#!/usr/bin/env python3
"""Hop floor: what a BPF program on each hop tracepoint costs a flood, whatever it does.

``kdbg watch --journey`` adds a program on each hop tracepoint (kdbg/trace/hops.py); the
flood of bench/drop_storm.py crosses three a packet (net_dev_queue on veth-a, netif_rx and
netif_receive_skb on veth-b). Side by side in rounds, this measures the flooder's CPU
time per drop with no program on them, with an empty one (``r0 = 0; exit``, tp_btf) on
each, and with two on each. Then, in one flood with ``kernel.bpf_stats_enabled``, each
of the journey's hop programs' run time per call beside an empty program's on the same
tracepoint: the difference is what the journey's code adds to the dispatch.

The flooder's CPU time (user + system of the flood process, from wait4) covers sending
and, in its own context, receiving and dropping: a kernel without IRQ time accounting
charges softirq work to the task it interrupts. It depends less than drops a second on
what else runs on the machine.

    sudo .venv/bin/python bench/hop_floor.py [--seconds 2] [--rounds 6]

Needs root, bcc and gcc. Traffic stays inside two namespaces this script creates and
removes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from drop_storm import PORT, flood  # noqa: E402

from kdbg.demo.throwaway import VethLab  # noqa: E402
from kdbg.symbols.btf import Btf  # noqa: E402
from kdbg.trace import bpfsys  # noqa: E402
from kdbg.trace.fexitcheck import RETURN_ZERO  # noqa: E402

# The hop tracepoints the flood crosses, once each a packet.
CROSSED = ("net_dev_queue", "netif_rx", "netif_receive_skb")
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def attach_empty(stack: ExitStack, btf: Btf, copies: int) -> list[int]:
    """``copies`` empty tp_btf programs on each crossed tracepoint; their fds."""
    progs = []
    for _ in range(copies):
        for tp in CROSSED:
            tid, _args = btf.tracepoint_proto(tp)
            fd, _log = bpfsys.prog_load(bpfsys.PROG_TRACING, RETURN_ZERO, "hop_floor_empty",
                                        btf_id=tid)
            if fd < 0:
                raise OSError(-fd, f"loading an empty program on {tp}: {os.strerror(-fd)}")
            stack.callback(os.close, fd)
            stack.callback(os.close, bpfsys.raw_tracepoint_open(None, fd))
            progs.append(fd)
    return progs


def floor(lab: VethLab, flooder: Path, btf: Btf, seconds: float, rounds: int) -> None:
    variants = (("none", 0), ("an empty program on each (3)", 1),
                ("two empty programs on each (6)", 2))
    per_drop: dict[str, list[float]] = {name: [] for name, _ in variants}
    for r in range(rounds):
        line = []
        for name, copies in variants:
            with ExitStack() as stack:
                attach_empty(stack, btf, copies)
                drops, _elapsed, cpu = flood(lab, flooder, seconds)
            per_drop[name].append(cpu / drops * 1e9)
            line.append(f"{per_drop[name][-1]:,.0f} ns ({drops / seconds:,.0f}/s)")
        print(f"  round {r + 1}: " + ", ".join(line), flush=True)
    base = statistics.median(per_drop["none"])
    print(f"{'programs on the hop tracepoints':40s} {'cpu/drop':>9s} {'extra':>7s} {'ratio':>6s}")
    for name, _ in variants:
        v = statistics.median(per_drop[name])
        extra = f"{v - base:+.0f}" if v != base else "-"
        print(f"{name:40s} {v:6,.0f} ns {extra:>7s} {base / v:6.3f}")


def journey_programs(btf: Btf, after: int) -> dict[str, int]:
    """The hop programs a watch loaded (program ids above ``after``), by tracepoint."""
    by_btf = {btf.tracepoint_proto(tp)[0]: tp for tp in CROSSED}
    found = {}
    pid = after
    while (nxt := bpfsys.prog_next_id(pid)) is not None:
        pid = nxt
        try:
            fd = bpfsys.prog_fd_by_id(pid)
        except OSError:
            continue
        try:
            info = bpfsys.prog_info(fd)
            if info.name.startswith(b"kdbg_journey") and info.attach_btf_id in by_btf:
                found[by_btf[info.attach_btf_id]] = pid
        finally:
            os.close(fd)
    return found


def run_time(prog_id: int) -> tuple[int, int]:
    fd = bpfsys.prog_fd_by_id(prog_id)
    try:
        info = bpfsys.prog_info(fd)
        return int(info.run_time_ns), int(info.run_cnt)
    finally:
        os.close(fd)


def last_prog_id() -> int:
    pid = 0
    while (nxt := bpfsys.prog_next_id(pid)) is not None:
        pid = nxt
    return pid


def code_cost(lab: VethLab, flooder: Path, btf: Btf, seconds: float) -> None:
    """Each journey hop program's run time per call beside an empty program's."""
    after = last_prog_id()
    watch = subprocess.Popen([sys.executable, "-m", "kdbg", "watch", "--json", "--journey",
                              "--dport", str(PORT), "--netns", lab.b.name],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT)
    old = STATS.read_text().strip()
    try:
        assert watch.stderr is not None
        while "kdbg: watching" not in (line := watch.stderr.readline()):
            if not line:
                raise RuntimeError("kdbg watch exited before it was watching")
        mine = journey_programs(btf, after)
        with ExitStack() as stack:
            empty = dict(zip(CROSSED, (bpfsys.prog_info(fd).id for fd in
                                       attach_empty(stack, btf, 1)), strict=True))
            STATS.write_text("1")
            try:
                before = {tp: (run_time(empty[tp]), run_time(mine[tp])) for tp in mine}
                flood(lab, flooder, seconds)
                after_ = {tp: (run_time(empty[tp]), run_time(mine[tp])) for tp in mine}
            finally:
                STATS.write_text(old)
    finally:
        watch.terminate()
        watch.communicate(timeout=60)
    print("run time per call (bpf_stats; its own clock reads are in both columns):")
    print(f"{'tracepoint':22s} {'calls':>10s} {'empty':>8s} {'journey':>8s} {'its code':>9s}")
    for tp in CROSSED:
        if tp not in mine:
            continue
        (e0, j0), (e1, j1) = before[tp], after_[tp]
        calls = max(j1[1] - j0[1], 1)
        e = (e1[0] - e0[0]) / max(e1[1] - e0[1], 1)
        j = (j1[0] - j0[0]) / calls
        print(f"{'net:' + tp:22s} {calls:>10,} {e:6.1f} ns {j:6.1f} ns {j - e:+7.1f} ns")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("hop_floor: needs root", file=sys.stderr)
        return 2
    if not shutil.which("gcc"):
        print("hop_floor: gcc not found (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="kdbg-hopfloor-"))
    try:
        flooder = tmp / "flood"
        subprocess.run(["gcc", "-O2", "-o", str(flooder), str(ROOT / "bench" / "flood.c")],
                       check=True)
        btf = Btf.load()
        with VethLab(prefix=f"kdbgfloor{os.getpid()}", subnet=83) as lab:
            lab.drop_udp(PORT)
            flood(lab, flooder, 1)  # warm up
            print(f"hop_floor: {args.rounds} rounds of {args.seconds:.0f} s floods into a "
                  "DROP rule; the flooder's CPU time per drop, medians; load average "
                  f"{os.getloadavg()[0]:.2f}")
            floor(lab, flooder, btf, args.seconds, args.rounds)
            code_cost(lab, flooder, btf, args.seconds)
            print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
