"""The guest half of bench/xdp_tracing.py (run inside a lab guest, as root): an XDP
program dropping UDP to one port on the inner end of a veth pair in a throw-away
namespace, a flood into it from the outer end, and the program's own rate (its runs a
second, from the kernel's ``bpf_stats``) with no tracer and with ``kdbg watch --bpf``
tracing it, paired round by round. Prints one JSON object; everything made is removed.

``xdp_guest.py FLOODER ROUNDS SECONDS``
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdbg.lab.guest import kdbg_argv  # noqa: E402  (the repository's kdbg, by path)
from kdbg.trace import bpfsys  # noqa: E402
from tests.vm.bpf_traffic import xdp_on_veth  # noqa: E402

PORT = 7777
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
READY_WAIT = 600.0  # s for a tracer to say it watches (its first compile under TCG)


def runs(prog_id: int) -> int:
    """How many times the program has run (``bpf_stats``)."""
    fd = bpfsys.prog_fd_by_id(prog_id)
    try:
        return int(bpfsys.prog_info(fd).run_cnt)
    finally:
        os.close(fd)


def flood(flooder: str, seconds: int, prog_id: int) -> dict[str, float]:
    """One flood: the program's runs a second, and the flooder's packets a second."""
    before, t0 = runs(prog_id), time.monotonic()
    out = subprocess.run([flooder, "10.98.0.1", "10.98.0.2", str(PORT), str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    elapsed, after = time.monotonic() - t0, runs(prog_id)
    return {"runs_per_s": (after - before) / elapsed, "sent_per_s": int(out) / elapsed}


def start_tracer(prog_id: int, extra: list[str]) -> subprocess.Popen[str]:
    """``kdbg watch --bpf --prog ID`` (its records to /dev/null) once it watches."""
    proc = subprocess.Popen([*kdbg_argv(), "watch", "--bpf", "--prog", str(prog_id), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    end = time.monotonic() + READY_WAIT
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"kdbg watch ended before watching (status {proc.wait()})")
        if line.startswith("kdbg: watching"):
            time.sleep(0.5)  # past the first rescan
            return proc
    proc.kill()
    raise RuntimeError("kdbg watch did not start in time")


def stop_tracer(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.strip().splitlines()[-1] if err.strip() else ""


TRACERS = {"kdbg watch --bpf (streaming)": [],
           "kdbg watch --bpf --stats": ["--stats"]}


def main(flooder: str, rounds: int, seconds: int) -> int:
    stats_was = STATS.read_text().strip()
    result: dict[str, object] = {"kernel": os.uname().release, "rounds": rounds,
                                 "seconds": seconds}
    with xdp_on_veth(PORT, subnet=98) as (prog_id, _inner, _outer):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"warm", ("10.98.0.2", PORT + 1))  # passed: the address resolves
        time.sleep(1)
        STATS.write_text("1")
        try:
            tracers: dict[str, dict[str, object]] = {}
            for name, extra in TRACERS.items():
                proc = start_tracer(prog_id, extra)
                stop_tracer(proc)  # the first start compiled; each round's start is warm
                pairs = []
                for _ in range(rounds):
                    base = flood(flooder, seconds, prog_id)
                    proc = start_tracer(prog_id, extra)
                    try:
                        traced = flood(flooder, seconds, prog_id)
                    finally:
                        last = stop_tracer(proc)
                    pairs.append({"baseline": base, "traced": traced, "tracer_said": last})
                tracers[name] = {"rounds": pairs}
        finally:
            STATS.write_text(stats_was)
        result["tracers"], result["prog_id"] = tracers, prog_id
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
