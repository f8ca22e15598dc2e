#!/usr/bin/env python3
"""Ctrl-C (or SIGTERM) to exit for ``kdbg watch --break``, in each phase, on a lab.

    .venv/bin/python bench/ctrl_c.py [--lab NAME] [--runs 5] [--signal INT|TERM]
                                     [--phase connecting ...]

Boots (or reuses) a lab, adds a DROP rule for UDP 5555 in the guest and keeps a
guest-side sender that fires one datagram whenever the host writes a line to it, so
drops come only when asked. For each phase it runs ``kdbg watch --lab NAME --reason
NETFILTER_DROP --break --json`` as a real process (SIGINT at its default), waits for
the phase, sends the signal, and measures signal -> exit. Phases:

- connecting: 1 s after "connecting gdb to" (gdb loading the debug vmlinux);
- tracer: 1 s after "starting the tracer in the target" (bcc compiling in the guest);
- armed: right after the "armed" record (one drop fired to arm it);
- hit: 0.3 s after the drop that hits (the target is stopped, or the hit is being
  reported).

Prints each run and the median per phase; target: under 2 s, with an ok ``cleanup``
record. A benchmark prints figures; it is not a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdbg import lab  # noqa: E402
from kdbg.errors import LabLost  # noqa: E402

PORT = 5555
SENDER = ["bash", "-c", f"while read l; do echo x > /dev/udp/127.0.0.1/{PORT}; done"]
PHASES = ("connecting", "tracer", "armed", "hit")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background job starts with it ignored


class Run:
    """One ``kdbg watch --break`` process, its lines as they come (stdout and stderr)."""

    def __init__(self, name: str) -> None:
        argv = [sys.executable, "-m", "kdbg", "watch", "--lab", name, "--reason",
                "NETFILTER_DROP", "--proto", "udp", "--dport", str(PORT), "--break", "--json"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     preexec_fn=_default_sigint)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        for name_, pipe in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._pump, args=(name_, pipe), daemon=True).start()

    def _pump(self, name: str, pipe: Any) -> None:
        for line in pipe:
            self.lines.put((name, line.rstrip("\n")))

    def wait_for(self, needle: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"kdbg exited before {needle!r}: {self.seen[-5:]}") from None
                continue
            self.seen.append(item)
            if needle in item[1]:
                return
        raise RuntimeError(f"no {needle!r} within {timeout:g} s")

    def stop(self, sig: int) -> tuple[float, dict[str, Any] | None]:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(60)
        took = time.monotonic() - t0
        time.sleep(0.1)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        cleanups = [json.loads(line) for kind, line in self.seen
                    if kind == "out" and '"type":"cleanup"' in line]
        return took, (cleanups[-1] if cleanups else None)


def measure(name: str, phase: str, sig: int, fire: Any) -> tuple[float, dict[str, Any] | None]:
    run = Run(name)
    try:
        if phase == "connecting":
            run.wait_for("connecting gdb to")
            time.sleep(1.0)
        elif phase == "tracer":
            run.wait_for("starting the tracer in the target")
            time.sleep(1.0)
        else:
            run.wait_for("tracer attached")
            fire()
            run.wait_for('"type":"armed"', timeout=60)
            if phase == "hit":
                fire()
                time.sleep(0.3)
        return run.stop(sig)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lab", default="bench-ctrlc")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--signal", choices=("INT", "TERM"), default="INT")
    ap.add_argument("--phase", action="append", choices=PHASES)
    args = ap.parse_args()
    sig = signal.SIGINT if args.signal == "INT" else signal.SIGTERM
    booted = False
    try:
        lab.require(args.lab)
    except Exception:  # noqa: BLE001 - not running: boot it
        lab.up(lab.LabConfig(name=args.lab))
        booted = True
    sender = None
    try:
        lab.run(args.lab, ["sh", "-c", f"iptables -C INPUT -p udp --dport {PORT} -j DROP "
                                       f"2>/dev/null || iptables -A INPUT -p udp --dport "
                                       f"{PORT} -j DROP"])
        sender = lab.stream(args.lab, SENDER, stdin=True)
        def drain() -> None:  # the sender's output; its channel closes at the end
            with contextlib.suppress(LabLost):
                for _ in sender:
                    pass

        threading.Thread(target=drain, daemon=True).start()

        def fire() -> None:
            sender.send_stdin(b"x\n")

        print(f"lab {args.lab}; SIG{args.signal} to exit, {args.runs} runs per phase")
        results: dict[str, list[float]] = {}
        for phase in args.phase or PHASES:
            for i in range(args.runs):
                took, cleanup = measure(args.lab, phase, sig, fire)
                ok = cleanup is not None and cleanup.get("ok")
                print(f"  {phase:<11} run {i + 1}: {took:5.2f} s  cleanup "
                      f"{'ok' if ok else cleanup}", flush=True)
                results.setdefault(phase, []).append(took)
        print("median signal -> exit (target < 2 s):")
        for phase, values in results.items():
            med = statistics.median(values)
            print(f"  {phase:<11} {med:5.2f} s  (max {max(values):.2f}) "
                  f"{'ok' if med < 2 else 'OVER'}")
    finally:
        if sender is not None:
            sender.close()
        if booted and os.environ.get("KDBG_BENCH_KEEP") != "1":
            lab.down(args.lab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
