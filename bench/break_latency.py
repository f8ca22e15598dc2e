#!/usr/bin/env python3
"""``kdbg watch --break`` latency in the lab under TCG, next to bare gdb.

    .venv/bin/python bench/break_latency.py [--lab NAME] [--hits 3] [--kernel debian:6.12]

Boots (or reuses) a lab, adds a DROP rule for UDP 5555 in the guest, and keeps a
guest-side sender that fires one datagram whenever the host writes a line to it,
so each drop is triggered at a known host time. Each trigger's datagram has its own
length, and each hit is checked to be that trigger's packet (the stopped skb's length, read by
gdb and confirmed by the tracer's record), so no figure pairs a stop with another trigger's.
Then:

- kdbg: ``breakwatch.run`` arms at the first drop (event -> armed: from the drop's
  record arriving on the host), and for each later trigger measures trigger -> the
  stop (when kdbg read gdb's ``*stopped``), stop -> resumed, stop -> the hit reported
  (printed at the stop from what gdb reads: skb, reason, backtrace) and stop -> the
  tracer's record of the stopped skb confirming it (with its cause and kernel stack);
  each hit must be confirmed, its skb as gdb read it;
- peer: bare gdb (``gdb -batch``, the same breakpoint address, the same stub)
  measures trigger -> stop for the same drop site.

Prints medians, and kdbg's trigger->stop as a ratio to bare gdb's. Targets: armed
under 0.1 s after the event, the hit reported under 0.1 s after the stop. The
break-watch runs twice, without and with the stopped packet's journey
(``WatchConfig.journey``, on by default for ``--break``), and prints what the journey
adds to trigger -> hit reported and to stop -> record confirmed.
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
# One datagram per line written to it: the line and its newline as the payload.
SENDER = ["bash", "-c", f'while read l; do echo "$l" > /dev/udp/127.0.0.1/{PORT}; done']
IPV4_UDP_HEADERS = 20 + 8  # the skb's length at the netfilter drop: IPv4 header on
PRIME_BYTES = 1  # the datagrams that arm; each trigger's are longer, and its own


class Sink(BreakJsonSink):
    """Timestamps arming and hits; fires the next trigger."""

    def __init__(self, fire: Any) -> None:
        super().__init__(io.StringIO(), sys.stderr)
        self.fire = fire  # fire(n): one datagram with n payload bytes
        self.lock = threading.Lock()  # arming against the priming thread's fire
        self.attached = threading.Event()
        self.is_armed = threading.Event()
        self.armed_after: float | None = None
        self.triggers: list[tuple[float, int]] = []  # (when, payload bytes)
        self.hits: list[Any] = []
        self.reports: list[float] = []  # when each hit was printed (at its stop)
        self.confirms: dict[int, float] = {}  # hit number -> when the tracer's record came
        self.call_addr: int | None = None

    def progress(self, message: str) -> None:
        super().progress(message)
        if message.startswith("tracer attached"):
            self.attached.set()

    def armed(self, site: Any, bp: Any, event: Any, seconds: float) -> None:
        with self.lock:
            super().armed(site, bp, event, seconds)
            self.armed_after = seconds
            self.call_addr = site.call_addr
            self.is_armed.set()
        self.trigger()

    def trigger(self) -> None:
        size = PRIME_BYTES + 1 + len(self.triggers)
        self.triggers.append((time.monotonic(), size))
        self.fire(size)

    def hit(self, hit: Any) -> None:
        super().hit(hit)
        self.reports.append(time.monotonic())
        self.hits.append(hit)

    def confirmed(self, hit: Any) -> None:
        super().confirmed(hit)
        self.confirms[hit.number] = time.monotonic()


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
        fire(PRIME_BYTES)
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

        def fire(size: int) -> None:
            sender.send_stdin(b"x" * (size - 1) + b"\n")

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
        "journey_adds_to_record_confirmed_s": (with_journey["stop_to_record_confirmed_s"]
                                               - without["stop_to_record_confirmed_s"]),
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
        assert all(h.journey is not None and h.journey.hops for h in sink.hits), sink.hits
    return sink


def _paired(sink: Sink) -> tuple[list[tuple[float, float, float, float, float]], int]:
    """(trigger, stop, resumed, printed, confirmed) times of each hit that is a trigger's
    packet (confirmed: the tracer's record of the stopped skb came): the stopped skb's
    length (gdb's read at the stop) names the trigger, each one's
    datagram being of its own length. And how many hits were no trigger's (a priming
    packet still in flight when the breakpoint was armed): left out, not mispaired."""
    sent = {size: at for at, size in sink.triggers}
    rows, stray = [], 0
    for hit, reported in zip(sink.hits, sink.reports, strict=True):
        size = hit.skb.len - IPV4_UDP_HEADERS if hit.skb and hit.skb.len else None
        if size not in sent:
            stray += 1
            print(f"hit {hit.number}: skb length {hit.skb.len if hit.skb else None} is no "
                  f"trigger's ({hit.stack_note or 'priming packet'}); left out",
                  file=sys.stderr)
            continue
        if hit.record_skb is None or hit.differences:
            raise SystemExit(f"hit {hit.number}: the tracer's record does not confirm it: "
                             f"{hit.differences or hit.stack_note}")
        rows.append((sent[size], hit.stopped_at, hit.resumed_at, reported,
                     sink.confirms[hit.number]))
    if not rows:
        raise SystemExit("no hit was a trigger's packet")
    return rows, stray


def _latencies(sink: Sink) -> dict[str, Any]:
    med = statistics.median
    rows, stray = _paired(sink)
    stop_to_report = [r - s for _, s, _, r, _ in rows]
    stop_to_record = [c - s for _, s, _, _, c in rows]
    return {"kdbg_trigger_to_stop_s": med(s - t for t, s, _, _, _ in rows),
            "kdbg_trigger_to_hit_reported_s": med(r - t for t, _, _, r, _ in rows),
            "kdbg_stop_to_hit_reported_s": med(stop_to_report),
            "stop_to_hit_reported_all_s": [round(x, 3) for x in stop_to_report],
            "stop_to_resumed_s": med(u - s for _, s, u, _, _ in rows),
            "stop_to_record_confirmed_s": med(stop_to_record),
            "stop_to_record_confirmed_all_s": [round(x, 3) for x in stop_to_record],
            "resumed_to_record_s": med(c - u for _, _, u, _, c in rows),
            "runs": len(rows), "stray_hits": stray}


PRIME_EVERY = 10.0  # s: a loaded TCG guest takes seconds to report a drop


def _prime(sink: Sink) -> None:
    """Once the tracer is attached, fire a short datagram every PRIME_EVERY s until one
    arms the breakpoint; never after arming (the lock). One still in flight when the
    breakpoint goes in may stop there: :func:`_paired` leaves that stop out."""
    if not sink.attached.wait(timeout=900):
        return
    while True:
        with sink.lock:
            if sink.armed_after is not None:
                return
            with contextlib.suppress(Exception):
                sink.fire(PRIME_BYTES)
        if sink.is_armed.wait(PRIME_EVERY):
            return


class _Retrigger:
    """Wraps the sink: after each hit's record from the tracer, trigger the next drop."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)

    def confirmed(self, hit: Any) -> None:
        self.sink.confirmed(hit)
        if len(self.sink.reports) < 100:
            self.sink.trigger()


if __name__ == "__main__":
    sys.exit(main())
