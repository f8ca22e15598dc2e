#!/usr/bin/env python3
"""kdbg exporter benchmark: its cost under a drop storm, and scrape latency.

1. The drop storm of bench/drop_storm.py (a UDP flood into a DROP rule in two
   namespaces this script creates), run with ``kdbg watch --stats`` and with
   ``kdbg exporter`` scraped every second (by reason and location, and with the
   netns and ifname labels too), in the same rounds, all filtered to the
   namespace of the DROP rule. Each flood is
   paired with a no-tracer flood just before it; the report gives each tracer's
   median paired ratio, the exporter's against --stats's, and whether the
   exporter's count grew by exactly the DROP rule's count.
2. Scrape latency with 1,000 label sets: 1,000 throw-away network namespaces
   (each made by unshare(2) in a child, its loopback brought up, one UDP
   datagram sent to a closed port on it), so ``--labels reason,location,netns,
   ifname`` gives 1,000 series of NO_SOCKET drops; then timed scrapes.

    sudo .venv/bin/python bench/exporter_bench.py [--seconds 5] [--rounds 3] [--json]

Needs root, bcc and gcc. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from drop_storm import KDBG, PORT, flood, proc_usage, start_tracer  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kdbg.demo.throwaway import PY, VethLab  # noqa: E402

# One new network namespace per round, its loopback up, one datagram to a closed port.
# Each namespace is held open (a freed one's inode number is reused) until stdin closes;
# they all go when this child exits.
SPRAY_CODE = """
import ctypes, fcntl, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
held = []
for i in range({count}):
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "unshare")
    held.append(os.open("/proc/self/ns/net", os.O_RDONLY))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", 0x1 | 0x8 | 0x40))  # SIOCSIFFLAGS
    s.sendto(b"kdbg", ("127.0.0.1", 9))
    s.close()
print("ready", flush=True)
sys.stdin.read()
"""


def series(text: str, name: str = "kdbg_drops_total") -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def scrape(url: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
    return body, time.perf_counter() - t0


class Exporter:
    """``kdbg exporter`` on 127.0.0.1 and a free port (named in its ready line)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*KDBG, "exporter", "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("kdbg exporter exited before it was ready")
            if line.startswith("kdbg: exporting"):
                self.url = next(w for w in line.split() if w.startswith("http://"))
                # keep draining stderr so the exporter never blocks on it
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return
        raise RuntimeError("kdbg exporter not ready in 120 s")

    def stop(self) -> float:
        cpu = proc_usage(self.proc.pid)[0]
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        return cpu


BPF_SYSCALL = 321  # x86_64
BPF_ENABLE_STATS = 32


def enable_bpf_stats() -> int:
    """An fd that keeps the kernel's per-program run-time accounting on while open
    (BPF_ENABLE_STATS: nothing global is left switched on when it closes)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(16)  # enable_stats.type = BPF_STATS_RUN_TIME (0)
    fd = libc.syscall(BPF_SYSCALL, BPF_ENABLE_STATS, attr, 16)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS")
    return int(fd)


def prog_stats(pid: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the BPF programs process ``pid`` holds."""
    ns = cnt = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        ns += int(fields.get("run_time_ns", "0"))
        cnt += int(fields.get("run_cnt", "0"))
    return ns, cnt


def nft_packets(lab: VethLab) -> int:
    out = lab.b.run(["iptables", "-nvxL", "INPUT"]).stdout
    return next(int(ln.split()[0]) for ln in out.splitlines() if f"dpt:{PORT}" in ln)


def storm(args: argparse.Namespace, flooder: Path) -> dict[str, object]:
    secs = args.seconds
    ratios: dict[str, list[float]] = {"stats": [], "exporter": [], "exporter_dev": []}
    ns_per_drop: dict[str, list[float]] = {"stats": [], "exporter": [], "exporter_dev": []}
    exact: list[bool] = []
    latencies: list[float] = []
    with VethLab(prefix="kdbgexpb", subnet=78) as lab:
        lab.drop_udp(PORT)
        flood(lab, flooder, 1)
        for rnd in range(args.rounds):
            for name in ("stats", "exporter", "exporter_dev"):
                base, base_s = flood(lab, flooder, secs)
                if name == "stats":
                    proc = start_tracer([*KDBG, "watch", "--stats", "--reason",
                                         "NETFILTER_DROP", "--netns", lab.b.name],
                                        "kdbg: watching")
                    p0 = prog_stats(proc.pid)
                    drops, elapsed = flood(lab, flooder, secs)
                    p1 = prog_stats(proc.pid)
                    proc.send_signal(signal.SIGINT)
                    proc.wait(timeout=30)
                else:
                    labels = "reason,location" if name == "exporter" else \
                        "reason,location,netns,ifname"
                    # --netns: drops other programs on this machine cause are not ours
                    exp = Exporter("--reason", "NETFILTER_DROP", "--netns", lab.b.name,
                                   "--labels", labels)
                    before = sum(series(scrape(exp.url)[0]).values())
                    stop = threading.Event()

                    def scraper(url: str = exp.url, stop: threading.Event = stop) -> None:
                        while not stop.wait(1.0):
                            latencies.append(scrape(url)[1])
                    t = threading.Thread(target=scraper, daemon=True)
                    t.start()
                    n0 = nft_packets(lab)
                    p0 = prog_stats(exp.proc.pid)
                    drops, elapsed = flood(lab, flooder, secs)
                    p1 = prog_stats(exp.proc.pid)
                    stop.set()
                    t.join()
                    time.sleep(0.5)
                    counted = series(scrape(exp.url)[0])
                    grown = sum(counted.values()) - before
                    exact.append(grown == nft_packets(lab) - n0)
                    exp.stop()
                ratio = (drops / elapsed) / (base / base_s) if base else 0.0
                ratios[name].append(ratio)
                # every drop in the machine runs the program; the filter passes ours
                per = (p1[0] - p0[0]) / max(p1[1] - p0[1], 1)
                ns_per_drop[name].append(per)
                print(f"  round {rnd + 1}: {name:<13} {drops / elapsed:>10,.0f} drops/s, "
                      f"baseline {base / base_s:>10,.0f}: {ratio:.3f}; program "
                      f"{per:.0f} ns per run", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in ratios.items()}
    return {
        "seconds": secs, "rounds": args.rounds, "median_ratio_to_baseline": med,
        "all_ratios": ratios,
        "exporter_vs_stats": med["exporter"] / med["stats"],
        "exporter_dev_vs_stats": med["exporter_dev"] / med["stats"],
        "exporter_counts_exact": exact,
        "program_ns_per_run": {k: statistics.median(v) for k, v in ns_per_drop.items()},
        "program_ns_per_run_all": ns_per_drop,
        "scrape_during_storm_ms": {"median": 1000 * statistics.median(latencies),
                                   "max": 1000 * max(latencies), "n": len(latencies)},
    }


def label_sets(count: int, scrapes: int) -> dict[str, object]:
    exp = Exporter("--reason", "NO_SOCKET", "--labels", "reason,location,netns,ifname")
    try:
        few = [scrape(exp.url)[1] for _ in range(scrapes)]
        few_series = len(series(scrape(exp.url)[0]))
        t0 = time.monotonic()
        spray = subprocess.Popen([PY, "-c", SPRAY_CODE.format(count=count)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert spray.stdout is not None and spray.stdin is not None
        if spray.stdout.readline().strip() != "ready":
            raise RuntimeError("could not make the namespaces")
        spray_s = time.monotonic() - t0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = scrape(exp.url)[0]
            n = len(series(body))
            if n >= count:
                break
            time.sleep(0.5)
        times = []
        for _ in range(scrapes):
            body, dt = scrape(exp.url)
            times.append(dt)
        cpu = exp.stop()
        spray.stdin.close()
        spray.wait(timeout=60)
    finally:
        if exp.proc.poll() is None:
            exp.proc.kill()
    return {
        "label_sets": n, "namespaces_made_s": spray_s, "body_bytes": len(body),
        "scrape_ms": {"median": 1000 * statistics.median(times),
                      "p95": 1000 * sorted(times)[int(0.95 * (len(times) - 1))],
                      "max": 1000 * max(times), "n": len(times)},
        "scrape_ms_before": {"series": few_series, "median": 1000 * statistics.median(few)},
        "exporter_cpu_s": cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--label-sets", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=30)
    ap.add_argument("--skip-storm", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("exporter_bench: needs root", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="kdbg-expbench-"))
    result: dict[str, object] = {"load_average_start": os.getloadavg()}
    stats_fd = enable_bpf_stats()
    try:
        if not args.skip_storm:
            flooder = tmp / "flood"
            subprocess.run(["gcc", "-O2", "-o", str(flooder), str(ROOT / "bench" / "flood.c")],
                           check=True)
            result["storm"] = storm(args, flooder)
        result["label_sets"] = label_sets(args.label_sets, args.scrapes)
    finally:
        os.close(stats_fd)
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
