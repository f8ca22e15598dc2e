#!/usr/bin/env python3
"""Boot-to-ready time of `kdbg lab up` against a bare `vng --run KERNEL -- true`.

Both boot the same cached Debian kernel under TCG with the same CPUs and memory, in
alternating rounds of the same run (so both see the same machine load). The bare
figure is vng's whole run: boot, run `true`, power off. The kdbg figure is from
starting `up()` until the guest agent answered (tracefs, headers, NIC and shell set
up); the debug vmlinux and source fetches are off so only booting is timed. Target: ratio <= 1.20.

    .venv/bin/python bench/lab_boot.py [--rounds 3] [--cpus 2] [--memory 1G]
        [--kernel debian:6.12] [--name bench]

``--kernel`` takes what ``kdbg lab up --kernel`` takes (default: debian, the 6.1
kernel); both sides boot that kernel, and the lab is held to TCG like bare vng.
Writes bench/results/lab_boot.json (lab_boot.KERNEL.json for another kernel;
git-ignored) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdbg import lab  # noqa: E402


def bare_vng(image: Path, cpus: int, memory: str) -> float:
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ.get('PATH', '')}")
    argv = [str(venv_bin / "vng"), "--run", str(image), "--disable-kvm", "--force-9p",
            "-m", memory, "--cpus", str(cpus), "--", "true"]
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=600, cwd="/")
    took = time.monotonic() - started
    # 255: on this host virtme-ng-init finds no /dev/virtio-ports (no udevd), runs the
    # command on the console instead and cannot report its status; the boot still ran.
    if proc.returncode not in (0, 255):
        raise SystemExit(f"bare vng failed ({proc.returncode}): {proc.stderr[-500:]!r}")
    return took


def kdbg_up(cpus: int, memory: str, kernel: str = "debian", name: str = "bench") -> float:
    cfg = lab.LabConfig(name=name, kernel=kernel, cpus=cpus, memory=memory,
                        fetch_vmlinux=False, fetch_source=False, accel="tcg")
    started = time.monotonic()
    lab.up(cfg)
    took = time.monotonic() - started
    lab.down(name)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--memory", default="1G")
    ap.add_argument("--kernel", default="debian",
                    help="as for kdbg lab up --kernel, like debian:6.12")
    ap.add_argument("--name", default="bench", help="the lab's name")
    args = ap.parse_args()
    kernel = lab.resolve_kernel(args.kernel, progress=lambda m: print(m, file=sys.stderr))
    bare: list[float] = []
    ours: list[float] = []
    loads: list[float] = []
    for i in range(args.rounds):
        loads.append(os.getloadavg()[0])
        bare.append(bare_vng(kernel.image, args.cpus, args.memory))
        ours.append(kdbg_up(args.cpus, args.memory, args.kernel, args.name))
        print(f"round {i + 1}: vng --run -- true {bare[-1]:6.1f}s   kdbg lab up {ours[-1]:6.1f}s",
              flush=True)
    b, o = statistics.median(bare), statistics.median(ours)
    result = {
        "kernel_spec": args.kernel,
        "kernel": kernel.release,
        "cpus": args.cpus,
        "memory": args.memory,
        "bare_vng_s": bare,
        "kdbg_up_s": ours,
        "median_bare_s": round(b, 2),
        "median_kdbg_s": round(o, 2),
        "ratio": round(o / b, 3),
        "loadavg_1m_at_rounds": loads,
        "host_cpus": os.cpu_count(),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stem = "lab_boot" if args.kernel == "debian" else f"lab_boot.{args.kernel.replace(':', '-')}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"median: vng --run -- true {b:.1f}s, kdbg lab up {o:.1f}s, ratio {o / b:.2f} "
          f"(target <= 1.20); load average {statistics.mean(loads):.1f} on "
          f"{os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
