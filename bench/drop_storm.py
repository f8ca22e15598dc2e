#!/usr/bin/env python3
"""Drop-storm benchmark: what each tracer costs a UDP flood into a DROP rule.

Runs, in one go and on the same namespaces, floods with no tracer and with
``kdbg watch --stats``, ``kdbg watch`` streaming (a filter matching every drop,
and one matching none), a bpftrace one-liner counting by reason, and
``perf record -e skb:kfree_skb``. Reports drops per second as a ratio to the
no-tracer baseline, and the flooder's own CPU time per drop as a ratio (the
baseline's over the tracer's: less sensitive to what else runs on the machine);
tracer CPU and peak RSS, events lost, whether --stats counted exactly, and the time
from start to the ``kdbg: watching`` line.

    sudo .venv/bin/python bench/drop_storm.py [--seconds 5] [--json]

Needs root, bcc, bpftrace, perf and gcc. Traffic stays inside two namespaces
this script creates and removes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdbg.demo.throwaway import VethLab  # noqa: E402
from kdbg.trace import bpfsys  # noqa: E402
from kdbg.trace.program import NO_CT_READS_ENV  # noqa: E402

KDBG = [sys.executable, "-m", "kdbg"]
PORT = 5555


@dataclass
class Run:
    name: str
    drops: int
    seconds: float
    rate: float
    ratio: float = 0.0
    # the flooder's own CPU time per drop (sending, and receiving and dropping in its
    # context), and the baseline's over it: less sensitive than drops/s to what else
    # runs on the machine
    flood_cpu_ns: float = 0.0
    cpu_ratio: float = 0.0
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    lost: int | None = None
    counted: int | None = None
    exact: bool | None = None
    bytes_per_event: float | None = None  # recording file (kdbg --write, perf.data) / drops
    printed: int | None = None  # streaming: drop records
    summarized: int | None = None  # streaming: the "more" records' counts
    adds_up: bool | None = None  # streaming: printed + summarized = matched = rule counter
    # --mark-ct: the drop program's own time per run during the flood (kernel.bpf_stats)
    prog_ns_per_run: float | None = None


def nft_count(lab: VethLab) -> int:
    out = lab.b.run(["iptables", "-nvxL", "INPUT"]).stdout
    for line in out.splitlines():
        if f"dpt:{PORT}" in line:
            return int(line.split()[0])
    raise RuntimeError("DROP rule counter not found")


def perf_counts(path: Path) -> tuple[int, int]:
    """(samples, LOST records) in a perf.data file, from ``perf report --stats``."""
    out = subprocess.run(["perf", "report", "--stats", "-i", str(path)], capture_output=True,
                         text=True, timeout=600).stdout
    found = {}
    for kind in ("SAMPLE", "LOST"):
        m = re.search(rf"^\s*{kind} events:\s+(\d+)", out, re.M)
        found[kind] = int(m.group(1)) if m else 0
    return found["SAMPLE"], found["LOST"]


def proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a live process and its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / tick
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
    return cpu, (int(hwm.group(1)) / 1024 if hwm else 0.0)


def children_cpu() -> float:
    """CPU seconds (user + system) of the children waited for so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def flood(lab: VethLab, flooder: Path, seconds: float) -> tuple[int, float, float]:
    """(drops, seconds, the flooder's CPU seconds) of one flood. The kernel charges the
    softirq work done in the flooder's context (receive, drop, tracer programs) to it."""
    before = nft_count(lab)
    cpu0 = children_cpu()
    t0 = time.monotonic()
    lab.a.run([str(flooder), lab.addr_a, lab.addr_b, str(PORT), str(int(seconds))],
              timeout=seconds + 30)
    elapsed = time.monotonic() - t0
    return nft_count(lab) - before, elapsed, children_cpu() - cpu0


def accounted(run: Run, recs: list[dict[str, object]], summary: dict[str, object],
              expected: int) -> None:
    """A streaming run's accounting: printed + summarized = the kernel's matched count =
    the DROP rule's own counter (``expected``), and nothing lost."""
    run.printed = sum(1 for r in recs if r["type"] == "drop")
    run.summarized = sum(int(r["count"]) for r in recs if r["type"] == "more")  # type: ignore[call-overload]
    run.counted = int(summary["matched"])  # type: ignore[call-overload]
    run.adds_up = (run.printed + run.summarized == run.counted == expected
                   and run.lost == 0)


def prog_stats(pid: int, name: str = "kdbg_on_kfree_s") -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over process ``pid``'s BPF programs named ``name``
    (the kernel keeps 15 characters), found through its fds' fdinfo ``prog_id``."""
    ns = cnt = 0
    fd_dir = Path(f"/proc/{pid}/fdinfo")
    for entry in fd_dir.iterdir():
        try:
            m = re.search(r"^prog_id:\s+(\d+)", entry.read_text(), re.M)
        except OSError:
            continue
        if m is None:
            continue
        fd = bpfsys.prog_fd_by_id(int(m.group(1)))
        try:
            info = bpfsys.prog_info(fd)
        finally:
            os.close(fd)
        if bytes(info.name).rstrip(b"\0").decode() == name:
            ns, cnt = ns + info.run_time_ns, cnt + info.run_cnt
    return ns, cnt


def start_tracer(argv: list[str], ready: str | None, settle: float = 1.0
                 ) -> subprocess.Popen[str]:
    # stdout goes to a file: a pipe nobody reads would stall the tracer.
    out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop_tracer()
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True)
    proc.kdbg_out = out  # type: ignore[attr-defined]
    if ready:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError(f"{argv[0]} exited before it was ready")
            if ready in line:
                break
    else:
        time.sleep(settle)
    return proc


def stop_tracer(proc: subprocess.Popen[str]) -> tuple[str, float, float]:
    cpu, rss = proc_usage(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    f = proc.kdbg_out  # type: ignore[attr-defined]
    f.seek(0)
    out = f.read()
    f.close()
    return out, cpu, rss


def time_to_watching(runs: int = 5) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        proc = start_tracer([*KDBG, "watch", "--stats"], "kdbg: watching")
        times.append(time.monotonic() - t0)
        stop_tracer(proc)
    return times


def mark_ct_rounds(measure: Any, configs: list[Any], rounds: int, secs: float,
                   as_json: bool) -> int:
    """Each tracer with the mark and conntrack reads against itself without them, paired
    directly and in the order without, with, with, without (drift over the four floods
    cancels to first order); the median of the rounds' ratios of the summed rates."""
    print(f"drop_storm --mark-ct: {rounds} rounds of 4 x {secs:.0f} s floods per tracer "
          "(without, with, with, without the reads)", file=sys.stderr)
    out: dict[str, Any] = {"seconds": secs, "pairs": {}}
    for with_, without in ((configs[0], configs[1]), (configs[2], configs[3])):
        ratios, exact, ns_with, ns_without = [], True, [], []
        for rnd in range(rounds):
            runs = [measure(*c) for c in (without, with_, with_, without)]
            exact &= all(r.exact is not False and r.adds_up is not False for r in runs)
            w, wo = runs[1].rate + runs[2].rate, runs[0].rate + runs[3].rate
            ratios.append(w / wo if wo else 0.0)
            ns_with += [r.prog_ns_per_run for r in runs[1:3] if r.prog_ns_per_run]
            ns_without += [r.prog_ns_per_run for r in (runs[0], runs[3]) if r.prog_ns_per_run]
            per_run = " ".join(f"{r.prog_ns_per_run or 0:.0f}" for r in runs)
            print(f"  round {rnd + 1}: {with_[0]:<34} without {runs[0].rate:>9,.0f} "
                  f"{runs[3].rate:>9,.0f}, with {runs[1].rate:>9,.0f} {runs[2].rate:>9,.0f} "
                  f"drops/s: {ratios[-1]:.3f}; program ns/run (w/o, w, w, w/o): {per_run}",
                  file=sys.stderr)
        mw = statistics.median(ns_with) if ns_with else None
        mwo = statistics.median(ns_without) if ns_without else None
        out["pairs"][with_[0]] = {"ratios": ratios, "median": statistics.median(ratios),
                                  "every_run_exact": exact, "prog_ns_per_run_with": ns_with,
                                  "prog_ns_per_run_without": ns_without}
        print(f"{with_[0]}: with / without the mark and conntrack reads, median "
              f"{statistics.median(ratios):.3f} (rounds: "
              f"{', '.join(f'{r:.3f}' for r in ratios)}); counts exact in every run: "
              f"{'yes' if exact else 'NO'}")
        if mw is not None and mwo is not None:
            print(f"  the drop program's time per run, medians: {mw:.0f} ns with, {mwo:.0f} ns "
                  f"without ({mw - mwo:+.0f} ns)")
    out["load_average"] = os.getloadavg()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")
    if as_json:
        print(json.dumps(out, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="run only the tracers whose name contains TEXT (repeatable)")
    ap.add_argument("--mark-ct", action="store_true",
                    help="only --stats and streaming, each with and without the drop "
                    "program's mark and conntrack reads, in a namespace that tracks "
                    "connections (an iptables conntrack match)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("drop_storm: needs root", file=sys.stderr)
        return 2
    for tool in ("gcc", "bpftrace", "perf"):
        if not shutil.which(tool):
            print(f"drop_storm: {tool} not found (scripts/setup.sh installs it)", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="kdbg-bench-"))
    flooder = tmp / "flood"
    subprocess.run(["gcc", "-O2", "-o", str(flooder), str(ROOT / "bench" / "flood.c")],
                   check=True)
    runs: list[Run] = []
    secs = args.seconds
    try:
        # Our own namespaces: two runs at once must not delete each other's.
        with VethLab(prefix=f"kdbgbench{os.getpid()}", subnet=77) as lab:
            if args.mark_ct:  # every flooded packet gets an entry for the reads to read
                lab.b.run(["iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate",
                           "INVALID", "-j", "DROP"])
            lab.drop_udp(PORT)
            flood(lab, flooder, 1)  # warm up

            def measure(name: str, argv: list[str] | None, ready: str | None = None,
                        parse: str | None = None, expect_all: bool = True) -> Run:
                proc = start_tracer(argv, ready) if argv else None
                cpu0 = proc_usage(proc.pid)[0] if proc else 0.0
                prog0 = prog_stats(proc.pid) if proc and args.mark_ct else (0, 0)
                try:
                    drops, elapsed, flood_cpu = flood(lab, flooder, secs)
                    prog1 = prog_stats(proc.pid) if proc and args.mark_ct else (0, 0)
                except BaseException:
                    if proc is not None:  # never leave a tracer running
                        stop_tracer(proc)
                    raise
                run = Run(name, drops, elapsed, drops / elapsed,
                          flood_cpu_ns=flood_cpu / max(drops, 1) * 1e9)
                if prog1[1] > prog0[1]:
                    run.prog_ns_per_run = (prog1[0] - prog0[0]) / (prog1[1] - prog0[1])
                if proc is not None:
                    out, cpu1, run.peak_rss_mb = stop_tracer(proc)
                    run.cpu_s = cpu1 - cpu0  # during the flood only, not the compile
                    written = tmp / ("drops.kdbg" if parse == "record" else "perf.data")
                    if argv and str(written) in argv and written.exists():
                        run.bytes_per_event = written.stat().st_size / max(drops, 1)
                        if parse == "perf":
                            run.counted, run.lost = perf_counts(written)
                        written.unlink()
                    if parse == "record":
                        recs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
                        summ = [r for r in recs if r["type"] == "summary"]
                        if summ:
                            run.lost, run.counted = summ[-1]["lost"], summ[-1]["recorded"]
                            run.exact = run.counted == drops == summ[-1]["matched"]
                    if parse == "kdbg":
                        recs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
                        summ = [r for r in recs if r["type"] == "summary"]
                        run.lost = summ[-1]["lost"] if summ else None
                        final = [r for r in recs if r["type"] == "stats" and r.get("final")]
                        if final:
                            run.counted = sum(c["count"] for c in final[-1]["counts"])
                            run.exact = run.counted == (drops if expect_all else 0)
                        elif summ:
                            accounted(run, recs, summ[-1], drops if expect_all else 0)
                return run

            configs: list[tuple[str, list[str] | None, str | None, str | None, bool]] = [
                ("baseline (no tracer)", None, None, None, True),
                ("kdbg watch --stats",
                 [*KDBG, "watch", "--json", "--stats", "--reason", "NETFILTER_DROP"],
                 "kdbg: watching", "kdbg", True),
                ("kdbg watch --stats, filter matches none",
                 [*KDBG, "watch", "--json", "--stats", "--dport", str(PORT + 1)],
                 "kdbg: watching", "kdbg", False),
                # --netns: the accounting is checked against this namespace's DROP rule.
                ("kdbg watch streaming, all match",
                 [*KDBG, "watch", "--json", "--dport", str(PORT), "--netns", lab.b.name],
                 "kdbg: watching", "kdbg", True),
                # Causes are on by default; these show what they cost (docs/diagnose.md).
                ("kdbg watch streaming, all match, --no-causes",
                 [*KDBG, "watch", "--json", "--no-causes", "--dport", str(PORT), "--netns",
                  lab.b.name], "kdbg: watching", "kdbg", True),
                # The journey's cost: each flooded packet crosses three hop points.
                ("kdbg watch streaming, all match, --journey",
                 [*KDBG, "watch", "--json", "--journey", "--dport", str(PORT), "--netns",
                  lab.b.name], "kdbg: watching", "kdbg", True),
                ("kdbg watch --stats --no-causes",
                 [*KDBG, "watch", "--json", "--stats", "--no-causes", "--reason",
                  "NETFILTER_DROP"], "kdbg: watching", "kdbg", True),
                ("kdbg watch streaming, none match",
                 [*KDBG, "watch", "--json", "--dport", str(PORT + 1), "--netns", lab.b.name],
                 "kdbg: watching", "kdbg", False),
                # --netns: other floods on this machine must not count.
                ("kdbg watch --write (bulk ring to file)",
                 [*KDBG, "watch", "--json", "--write", str(tmp / "drops.kdbg"), "--dport",
                  str(PORT), "--netns", lab.b.name], "kdbg: watching", "record", True),
                ("bpftrace: count by reason",
                 ["bpftrace", "-e", "tracepoint:skb:kfree_skb { @[args->reason] = count(); }"],
                 None, None, True),
                ("perf record -e skb:kfree_skb",
                 ["perf", "record", "-q", "-e", "skb:kfree_skb", "-a", "-o",
                  str(tmp / "perf.data")], None, "perf", True),
            ]
            # The drop program without its mark and conntrack reads (a switch only this
            # bench sets), beside the same two tracers with them.
            no_ct = ["env", f"{NO_CT_READS_ENV}=1"]
            mark_ct = [
                configs[1],
                ("kdbg watch --stats, without mark/ct reads", [*no_ct, *(configs[1][1] or [])],
                 "kdbg: watching", "kdbg", True),
                configs[3],
                ("kdbg watch streaming, all match, without mark/ct reads",
                 [*no_ct, *(configs[3][1] or [])], "kdbg: watching", "kdbg", True),
            ]
            if args.mark_ct:
                # the kernel's per-program run time, on only for these runs (it costs every
                # BPF program on the machine a clock read while on)
                stats = Path("/proc/sys/kernel/bpf_stats_enabled")
                was = stats.read_text().strip()
                stats.write_text("1")
                try:
                    return mark_ct_rounds(measure, mark_ct, args.rounds, secs, args.json)
                finally:
                    stats.write_text(was)
            if args.only:
                configs = [configs[0]] + [c for c in configs[1:]
                                          if any(o in c[0] for o in args.only)]
            print(f"drop_storm: {args.rounds} rounds of {secs:.0f} s floods into a DROP rule; "
                  "each tracer's flood is paired with a baseline flood just before it",
                  file=sys.stderr)
            # This machine's throughput drifts by tens of percent over seconds (shared
            # cores, steal), so each tracer is judged against a baseline measured
            # right before it, and the median of those paired ratios is reported.
            ratios: dict[str, list[float]] = {name: [] for name, *_ in configs}
            cpu_ratios: dict[str, list[float]] = {name: [1.0] for name, *_ in configs[:1]}
            kept: dict[str, list[Run]] = {name: [] for name, *_ in configs}
            every_round_adds_up = True
            for rnd in range(args.rounds):
                for name, argv, ready, parse, expect_all in configs[1:]:
                    base = measure(configs[0][0], None)
                    run = measure(name, argv, ready, parse, expect_all)
                    ratios[configs[0][0]].append(1.0)
                    kept[configs[0][0]].append(base)
                    ratios[name].append(run.rate / base.rate if base.rate else 0.0)
                    cpu_ratios.setdefault(name, []).append(
                        base.flood_cpu_ns / run.flood_cpu_ns if run.flood_cpu_ns else 0.0)
                    kept[name].append(run)
                    every_round_adds_up &= run.adds_up is not False
                    adds = "" if run.adds_up is None else (
                        f"; {run.printed:,} printed + {run.summarized:,} summarized = "
                        f"{run.counted:,} matched, lost {run.lost}: "
                        f"{'adds up' if run.adds_up else 'DOES NOT ADD UP'}")
                    print(f"  round {rnd + 1}: {name:<40} {run.rate:>10,.0f} drops/s, "
                          f"baseline {base.rate:>10,.0f}: {ratios[name][-1]:.3f}; flooder CPU "
                          f"{run.flood_cpu_ns:,.0f} ns a drop, baseline {base.flood_cpu_ns:,.0f}: "
                          f"{cpu_ratios[name][-1]:.3f}{adds}",
                          file=sys.stderr)
            runs = []
            for name, *_ in configs:
                # The run whose paired ratio is the median stands for the tracer.
                order = sorted(range(len(ratios[name])), key=lambda i: ratios[name][i])
                mid = order[len(order) // 2]
                run = kept[name][mid]
                run.ratio = statistics.median(ratios[name])
                run.cpu_ratio = statistics.median(cpu_ratios[name])
                runs.append(run)
        ready = time_to_watching()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    by_name = {r.name: r for r in runs}
    causes = by_name.get("kdbg watch streaming, all match")
    no_causes = by_name.get("kdbg watch streaming, all match, --no-causes")
    causes_ratio = (causes.ratio / no_causes.ratio if causes and no_causes and no_causes.ratio
                    else None)
    result = {"seconds": secs, "runs": [asdict(r) for r in runs],
              "time_to_watching_s": {"median": statistics.median(ready), "all": ready},
              "streaming_causes_vs_no_causes": causes_ratio,
              "every_streaming_round_adds_up": every_round_adds_up,
              "load_average": os.getloadavg()}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'tracer':<42}{'drops/s':>12}{'ratio':>8}{'cpu/drop':>9}{'cpu s':>8}{'rss MB':>8}"
          f"{'lost':>10}{'B/event':>9}  stats exact / printed + summarized")
    for r in runs:
        cpu = f"{r.cpu_s:.2f}" if r.cpu_s is not None else "-"
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "-"
        lost = str(r.lost) if r.lost is not None else "-"
        exact = "-" if r.exact is None else (f"yes ({r.counted})" if r.exact
                                             else f"NO ({r.counted} of {r.drops})")
        if r.exact is None and r.counted is not None:  # perf: every kfree_skb, machine-wide
            exact = f"({r.counted} samples)"
        if r.adds_up is not None:
            exact = (f"{r.printed:,} + {r.summarized:,} = {r.counted:,} "
                     f"{'adds up' if r.adds_up else 'DOES NOT ADD UP'}")
        bpe = f"{r.bytes_per_event:.0f}" if r.bytes_per_event is not None else "-"
        print(f"{r.name:<42}{r.rate:>12,.0f}{r.ratio:>8.3f}{r.cpu_ratio:>9.3f}{cpu:>8}{rss:>8}"
              f"{lost:>10}{bpe:>9}"
              f"  {exact}")
    if causes_ratio is not None:
        print(f"streaming with causes / with --no-causes: {causes_ratio:.3f}; every streaming "
              f"round adds up: {'yes' if every_round_adds_up else 'NO'}")
    by_name = {r.name: r for r in runs}
    journey = by_name.get("kdbg watch streaming, all match, --journey")
    streaming = by_name.get("kdbg watch streaming, all match")
    if journey is not None and streaming is not None:
        print(f"--journey: streaming's ratio {streaming.ratio:.3f}, with the journey "
              f"{journey.ratio:.3f} ({journey.ratio - streaming.ratio:+.3f}); by the "
              f"flooder's CPU a drop {streaming.cpu_ratio:.3f} and {journey.cpu_ratio:.3f} "
              f"({journey.cpu_ratio - streaming.cpu_ratio:+.3f})")
    print(f"time to 'kdbg: watching': median {statistics.median(ready):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in ready)}); load average "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
