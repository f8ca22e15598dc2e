#!/usr/bin/env python3
"""What the lab's access control costs: boot-to-ready and exec round trip, before and after.

The "before" is a git revision of this repository (by default the one before the exec
key and the Unix sockets came in), extracted to a temporary directory and run with the
same venv; the "after" is this working tree. Rounds alternate between the two in the
same run, so both see the same machine load. Each round, in a fresh Python process:
boot a lab (`up()`, no debug vmlinux fetch), then time ``--execs`` round trips of
``true`` through the exec channel (each a new connection: key, run, exit status), then
stop the lab. Target: after/before at most 1.02 for both figures.

    .venv/bin/python bench/lab_access.py [--before REV] [--rounds 5] [--execs 30]

Writes bench/results/lab_access.json (git-ignored) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "39fc93f"  # the last revision whose labs had open TCP endpoints and no exec key

ROUND = r"""
import json, statistics, sys, time
from kdbg import lab
from kdbg.lab import guest
name, execs = sys.argv[1], int(sys.argv[2])
cfg = lab.LabConfig(name=name, fetch_vmlinux=False)
started = time.monotonic()
lab.up(cfg)
boot = time.monotonic() - started
try:
    guest.run(name, ["true"]).check()  # warm: the first exec loads `true` over 9p
    rtts = []
    for _ in range(execs):
        t = time.monotonic()
        guest.run(name, ["true"]).check()
        rtts.append(time.monotonic() - t)
finally:
    lab.down(name)
print(json.dumps({"boot_s": boot, "exec_rtt_s": statistics.median(rtts)}))
"""


def one_round(tree: Path, name: str, execs: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-c", ROUND, name, str(execs)], env=env, cwd=tree,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"round in {tree} failed: {proc.stderr[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--execs", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdbg-before-") as tmp:
        old = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        loads = []
        for i in range(args.rounds):
            loads.append(os.getloadavg()[0])
            order = [("before", old), ("after", ROOT)]
            if i % 2:
                order.reverse()
            for label, tree in order:
                runs[label].append(one_round(tree, f"bench-{label}", args.execs))
            b, a = runs["before"][-1], runs["after"][-1]
            print(f"round {i + 1}: boot {b['boot_s']:5.1f}s -> {a['boot_s']:5.1f}s   "
                  f"exec {b['exec_rtt_s'] * 1000:6.1f}ms -> {a['exec_rtt_s'] * 1000:6.1f}ms",
                  flush=True)
    med = {label: {k: statistics.median(r[k] for r in rs) for k in ("boot_s", "exec_rtt_s")}
           for label, rs in runs.items()}
    ratio = {k: med["after"][k] / med["before"][k] for k in ("boot_s", "exec_rtt_s")}
    result = {"before": args.before, "rounds": runs, "median": med, "ratio": ratio,
              "loadavg_1m_at_rounds": loads, "host_cpus": os.cpu_count()}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "lab_access.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"median boot {med['before']['boot_s']:.2f}s -> {med['after']['boot_s']:.2f}s "
          f"(ratio {ratio['boot_s']:.3f}); exec round trip "
          f"{med['before']['exec_rtt_s'] * 1000:.1f}ms -> "
          f"{med['after']['exec_rtt_s'] * 1000:.1f}ms "
          f"(ratio {ratio['exec_rtt_s']:.3f}); target <= 1.02 each; load average "
          f"{statistics.mean(loads):.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
