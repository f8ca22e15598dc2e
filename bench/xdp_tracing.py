"""What ``kdbg watch --bpf`` costs the XDP program it traces: the program's own rate.

In a lab guest (booted for the run unless ``--lab`` names a running one), an XDP
program (tests/data/bpfprog/xdp_drop_port.c, built by bcc in the guest) drops a UDP
flood (bench/flood.c, sendmmsg) on the inner end of a veth pair. Each round floods with
no tracer, then with ``kdbg watch --bpf --prog ID`` tracing the program (streaming, its
records to /dev/null, and ``--stats``); the program's rate is its runs a second as the
kernel counts them (``kernel.bpf_stats_enabled`` on for the whole run, for both sides of
every pair). A tracer's ratio is the median over the rounds of its rate over the
baseline flood just before it. Issue 26's target: at least 0.8.

    python bench/xdp_tracing.py [--lab NAME] [--kernel debian:6.12] [--rounds 3]
        [--seconds 5] [--json]

Under TCG the guest is slow and its clock is the host's: the ratios, not the rates,
are the result. The first start of each tracer compiles its program in the guest
(minutes under TCG) and is not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdbg import lab  # noqa: E402
from kdbg.dirs import cache_dir  # noqa: E402

GUEST = ROOT / "bench" / "xdp_guest.py"


def flooder() -> Path:
    """bench/flood.c built into kdbg's cache (the guest runs it from there over 9p)."""
    out = cache_dir("bench") / "flood"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", str(out), str(ROOT / "bench" / "flood.c")],
                   check=True)
    return out


def table(result: dict) -> list[str]:
    lines = [f"{'tracer':34} {'program runs/s':>15} {'ratio':>6}   rounds",
             f"{'baseline (no tracer)':34} {'':>15} {1.0:6.3f}"]
    for name, data in result["tracers"].items():
        pairs = data["rounds"]
        ratios = [p["traced"]["runs_per_s"] / p["baseline"]["runs_per_s"] for p in pairs]
        rate = statistics.median(p["traced"]["runs_per_s"] for p in pairs)
        data["ratio"] = statistics.median(ratios)
        lines.append(f"{name:34} {rate:15,.0f} {data['ratio']:6.3f}   "
                     + ", ".join(f"{r:.3f}" for r in ratios))
    base = statistics.median(p["baseline"]["runs_per_s"]
                             for d in result["tracers"].values() for p in d["rounds"])
    lines.insert(2, f"  (baseline floods: median {base:,.0f} program runs a second)")
    lines.append("each traced round's end line:")
    lines += [f"  {name}: {p['tracer_said']}" for name, data in result["tracers"].items()
              for p in data["rounds"]]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default="benchxdp")
    ap.add_argument("--kernel", default="debian",
                    help="the lab's kernel when booting one (as for kdbg lab up --kernel)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    binary = flooder()
    booted = False
    if args.lab not in {i.name for i in lab.status() if i.alive}:
        print(f"booting lab {args.lab}", file=sys.stderr)
        lab.up(lab.LabConfig(name=args.lab, kernel=args.kernel))
        booted = True
    try:
        done = lab.run(args.lab, [sys.executable, str(GUEST), str(binary), str(args.rounds),
                                  str(args.seconds)], timeout=3600)
    finally:
        if booted:
            lab.down(args.lab)
    out = done.stdout.decode(errors="replace")
    if done.status != 0:
        err = done.stderr.decode(errors="replace")
        print(f"xdp_tracing: the guest's run failed ({done.status}):\n{err[-3000:]}",
              file=sys.stderr)
        return 1
    result = json.loads(out.strip().splitlines()[-1])
    lines = table(result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"kernel {result['kernel']}, {args.rounds} rounds of {args.seconds} s")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
