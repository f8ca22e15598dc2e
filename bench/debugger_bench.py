"""Debugger timings in the lab under TCG: connect, drop event to breakpoint armed, drop to hit.

    .venv/bin/python bench/debugger_bench.py [--lab NAME] [--runs N] [--vmlinux]
    .venv/bin/python bench/debugger_bench.py --source [--lab NAME] [--runs N]

Needs a running lab (kdbg.lab.up). The "event" is the drop location as the tracer
reports it; "armed" is when break_drop_site() returns (target interrupted, call found
by disassembly, guard consulted, breakpoint inserted, target resumed). Target: < 1 s.

``--source`` times the attach alone, with the debug vmlinux, in alternating rounds of
the same run: bare (today's connect: symbols and kdbg's helpers) and with the kernel's
own source, Linux's gdb scripts and kdbg's prompt commands loaded (what every stop
gets). Target: no more than 1 s over the bare figure.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from kdbg.debugger import Session, Target, from_lab
from kdbg.debugger.model import KernelTree
from kdbg.lab import guest

SEND = ("import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "t = time.time(); s.sendto(b'kdbg', ('127.0.0.1', 9)); print(t)")


def location(lab: str) -> int:
    script = ("cd /sys/kernel/tracing && echo 0 > options/hash-ptr && echo > trace && "
              "echo 1 > events/skb/kfree_skb/enable && "
              f"python3 -c \"{SEND}\" >/dev/null && sleep 0.5 && "
              "echo 0 > events/skb/kfree_skb/enable && cat trace")
    out = guest.run(lab, ["sh", "-c", script]).check().stdout.decode()
    line = next(ln for ln in out.splitlines() if "kfree_skb:" in ln and "protocol=2048" in ln)
    return int(line.split("location=")[1].split()[0], 16)


def attach_seconds(target: Target, tree: KernelTree) -> float:
    """One connect to ``target`` with ``tree`` (closed at once): its seconds."""
    t0 = time.monotonic()
    with Session.connect(target.endpoint, kallsyms=target.kallsyms, vmlinux=target.vmlinux,
                         timeout=180, tree=tree):
        took = time.monotonic() - t0
    return took


def compare_source(lab: str, runs: int) -> None:
    """Attach bare and with source and helpers, alternating, and print both."""
    target = from_lab(lab)
    if not target.tree.dirs:
        raise SystemExit(f"lab {lab} has no kernel source: {target.tree.note}")
    bare, full = [], []
    for _ in range(runs):
        bare.append(attach_seconds(target, KernelTree()))
        full.append(attach_seconds(target, target.tree))
    b, f = statistics.median(bare), statistics.median(full)
    print(f"lab {lab}, TCG, {runs} rounds, DWARF vmlinux; source {target.tree.dirs[0]}")
    print(f"attach, bare (symbols, kdbg's helpers):                  median {b:.3f} s  "
          f"min {min(bare):.3f}  max {max(bare):.3f}")
    print(f"attach, with source, Linux's gdb scripts, prompt commands: median {f:.3f} s  "
          f"min {min(full):.3f}  max {max(full):.3f}")
    print(f"difference: {f - b:+.3f} s (target: at most +1 s); ratio {f / b:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lab", default="default")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--vmlinux", action="store_true", help="load the debug vmlinux (DWARF)")
    ap.add_argument("--source", action="store_true",
                    help="attach with and without the kernel's source and gdb scripts")
    args = ap.parse_args()
    if args.source:
        compare_source(args.lab, args.runs)
        return
    target = from_lab(args.lab, want_vmlinux=args.vmlinux, want_source=False)
    loc = location(args.lab)
    connect, armed, hit = [], [], []
    for _ in range(args.runs):
        t0 = time.monotonic()
        with Session.connect(target.endpoint, kallsyms=target.kallsyms, vmlinux=target.vmlinux,
                             timeout=180) as s:
            connect.append(time.monotonic() - t0)
            s.run.resume()
            t1 = time.monotonic()
            s.run.break_drop_site(loc)
            armed.append(time.monotonic() - t1)
            sent: list[float] = []

            def fire(sent: list[float] = sent) -> None:
                sent.append(time.monotonic())
                guest.run(args.lab, ["python3", "-c", SEND], timeout=None)

            th = threading.Thread(target=fire, daemon=True)
            th.start()
            stop = s.run.wait_stop(120)
            hit.append(time.monotonic() - sent[0])
            assert stop.hit
            s.run.resume()
        th.join(60)

    def fmt(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.3f} s  min {min(xs):.3f}  max {max(xs):.3f}"

    dwarf = "with DWARF vmlinux" if args.vmlinux else "kallsyms only"
    print(f"lab {args.lab}, TCG, {args.runs} runs, {dwarf}")
    print(f"connect (gdb start, symbols, helpers, attach):    {fmt(connect)}")
    print(f"drop event -> breakpoint armed (target running): {fmt(armed)}")
    print(f"triggering drop -> hit reported (+backtrace):    {fmt(hit)}")
    print("  (the hit time includes starting python3 in the guest over the exec channel)")


if __name__ == "__main__":
    main()
