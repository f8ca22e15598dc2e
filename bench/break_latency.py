#!/usr/bin/env python3
"""``kdbg watch --break`` latency in the lab under TCG, next to bare gdb.

    .venv/bin/python bench/break_latency.py [--lab NAME] [--hits 3] [--kernel debian:6.12]

Boots (or reuses) a lab, adds a DROP rule for UDP 5555 in the guest, and keeps a
guest-side sender that fires one datagram whenever the host writes a line to it,
so each drop is triggered at a known host time. Then:

- kdbg: ``breakwatch.run`` arms at the first drop (event -> armed), and for each
  later trigger measures trigger -> the stop seen by kdbg, and trigger -> the hit
  reported (which includes reading the skb and resuming);
- peer: bare gdb (``gdb -batch``, the same breakpoint address, the same stub)
  measures trigger -> stop for the same drop site.

Prints medians, and kdbg's trigger->stop as a ratio to bare gdb's, and the stop to the
hit fully reported (the stopped skb's record from the tracer included). Targets: armed
under 0.1 s after the event, the hit reported under 0.1 s after the stop. The
break-watch runs twice, without and with the stopped packet's journey
(``WatchConfig.journey``, on by default for ``--break``), and prints what the journey
adds to trigger -> hit reported (target: under 0.1 s).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdbg import breakwatch, lab  # noqa: E402
from kdbg.breakwatch.report import BreakJsonSink  # noqa: E402
from kdbg.drops import WatchConfig  # noqa: E402
from kdbg.errors import KdbgError  # noqa: E402
from kdbg.trace.filters import PacketFilters  # noqa: E402

PORT = 5555
SENDER = ["bash", "-c", f"while read l; do echo x > /dev/udp/127.0.0.1/{PORT}; done"]


class Sink(BreakJsonSink):
    """Timestamps arming and hits; fires the next trigger."""

    def __init__(self, fire: Any) -> None:
        super().__init__(io.StringIO(), sys.stderr)
        self.fire = fire
        self.armed_after: float | None = None
        self.triggers: list[float] = []
        self.stops: list[float] = []
        self.reports: list[float] = []
        self.journeys: list[Any] = []
        self.call_addr: int | None = None

    def armed(self, site: Any, bp: Any, event: Any, seconds: float) -> None:
        super().armed(site, bp, event, seconds)
        self.armed_after = seconds
        self.call_addr = site.call_addr
        self.trigger()

    def trigger(self) -> None:
        self.triggers.append(time.monotonic())
        self.fire()

    def hit(self, hit: Any) -> None:
        super().hit(hit)
        self.stops.append(hit.stopped_at)
        self.reports.append(time.monotonic())
        self.journeys.append(hit.journey)


def bare_gdb(endpoint: str, addr: int, fire: Any, runs: int) -> list[float]:
    """trigger -> stop with plain gdb on the same breakpoint."""
    out = []
    for _ in range(runs):
        gdb = subprocess.Popen(
            ["gdb", "--nx", "-q", "-batch", "-ex", "set pagination off",
             "-ex", f"target remote {endpoint}",
             "-ex", f"break *0x{addr:x}", "-ex", "continue", "-ex", "delete",
             "-ex", "detach"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(3)  # connected, breakpoint inserted, continued
        t0 = time.monotonic()
        fire()
        assert gdb.stdout is not None
        for line in gdb.stdout:
            if line.startswith("Breakpoint 1,") or "hit Breakpoint" in line:
                out.append(time.monotonic() - t0)
                break
        gdb.wait(timeout=60)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default="benchbreak")
    ap.add_argument("--hits", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    ap.add_argument("--kernel", default="debian",
                    help="the lab's kernel when booting one (as for kdbg lab up --kernel)")
    args = ap.parse_args()
    booted = False
    if args.lab not in {i.name for i in lab.status() if i.alive}:
        print(f"booting lab {args.lab}", file=sys.stderr)
        lab.up(lab.LabConfig(name=args.lab, kernel=args.kernel))
        booted = True
    sender = None
    try:
        lab.run(args.lab, ["sh", "-c", f"iptables -C INPUT -p udp --dport {PORT} -j DROP "
                           f"2>/dev/null || iptables -A INPUT -p udp --dport {PORT} -j DROP"])
        sender = lab.stream(args.lab, SENDER, stdin=True)
        def drain() -> None:
            with contextlib.suppress(KdbgError):  # ends when the lab goes down
                for _ in sender:
                    pass

        threading.Thread(target=drain, daemon=True).start()

        def fire() -> None:
            sender.send_stdin(b"x\n")

        runs = {journey: _break_watch(args.lab, args.hits, fire, journey)
                for journey in (False, True)}
        sink = runs[False]
        assert sink.call_addr is not None
        release = lab.get(args.lab).release
        peer = bare_gdb(lab.get(args.lab).gdb_target, sink.call_addr, fire, args.hits)
    finally:
        if sender is not None:
            sender.close()
        if booted and not args.keep:
            lab.down(args.lab)
    med = statistics.median
    without, with_journey = _latencies(runs[False]), _latencies(runs[True])
    result = {
        "kernel": release,
        "event_to_armed_s": runs[False].armed_after,
        **without,
        "bare_gdb_trigger_to_stop_s": med(peer),
        "ratio_stop_kdbg_vs_gdb": without["kdbg_trigger_to_stop_s"] / med(peer),
        "with_journey": {"event_to_armed_s": runs[True].armed_after, **with_journey},
        "journey_adds_to_hit_reported_s": (with_journey["kdbg_trigger_to_hit_reported_s"]
                                           - without["kdbg_trigger_to_hit_reported_s"]),
    }
    print(json.dumps(result, indent=2))
    return 0


def _break_watch(name: str, hits: int, fire: Any, journey: bool) -> Sink:
    """One break-watch on lab ``name`` until ``hits`` stops are reported; its sink."""
    sink = Sink(fire)
    # The first drop arms; hits come from the sink's own triggers.
    threading.Thread(target=lambda: _prime(sink), daemon=True).start()
    outcome = breakwatch.run(
        WatchConfig(filters=PacketFilters(reasons=("NETFILTER_DROP",), dports=(PORT,)),
                    duration=900, journey=journey),
        breakwatch.BreakConfig(lab=name, break_count=hits),
        _Retrigger(sink),
    )
    assert sink.call_addr is not None and outcome.hits == hits
    if journey:  # every hit carries the stopped packet's hops
        assert all(j is not None and j.hops for j in sink.journeys), sink.journeys
    return sink


def _latencies(sink: Sink) -> dict[str, Any]:
    n = min(len(sink.triggers), len(sink.stops))
    med = statistics.median
    stop_to_report = [sink.reports[i] - sink.stops[i] for i in range(n)]
    return {"kdbg_trigger_to_stop_s": med(sink.stops[i] - sink.triggers[i] for i in range(n)),
            "kdbg_trigger_to_hit_reported_s": med(
                sink.reports[i] - sink.triggers[i] for i in range(n)),
            "kdbg_stop_to_hit_reported_s": med(stop_to_report),
            "stop_to_hit_reported_all_s": [round(x, 3) for x in stop_to_report],
            "runs": n}


def _prime(sink: Sink) -> None:
    """Fire until the first drop arms the breakpoint (the tracer takes a while to start)."""
    while sink.armed_after is None:
        time.sleep(2)
        with contextlib.suppress(Exception):
            sink.fire()


class _Retrigger:
    """Wraps the sink: after each hit is reported, trigger the next drop."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)

    def hit(self, hit: Any) -> None:
        self.sink.hit(hit)
        if len(self.sink.reports) < 100:
            self.sink.trigger()


if __name__ == "__main__":
    sys.exit(main())
