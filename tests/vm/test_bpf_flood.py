"""kdbg watch --bpf in a flood, in the lab guest: the XDP test program drops a UDP
flood faster than kdbg reads its records, the ring buffer overruns, and the verdict
program counts the rest per key in the kernel.

On a quiet veth pair (tests/vm/bpf_traffic.py: no IPv6, the neighbour resolved for
good) only the flood reaches the program, so every run of it while kdbg watches is a
drop; the kernel counts its runs (``kernel.bpf_stats_enabled``) from after kdbg says
it watches to after the flood. kdbg's end line must account for exactly those runs:
printed + summarized = matched = the program's runs, 0 lost, and some summarized in
"more" records naming the program and the flow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kdbg import lab as labmod

ROOT = Path(__file__).resolve().parents[2]
DROP_PORT, FLOOD_S = 7777, 2

SCENARIO = """
import json, os, signal, socket, subprocess, sys, tempfile, time
sys.path.insert(0, {root!r})
from kdbg.trace import bpfsys
from tests.vm.bpf_traffic import xdp_on_veth
STATS = "/proc/sys/kernel/bpf_stats_enabled"
def runs(prog_id):
    fd = bpfsys.prog_fd_by_id(prog_id)
    try:
        return bpfsys.prog_info(fd).run_cnt
    finally:
        os.close(fd)
was = open(STATS).read().strip()
with xdp_on_veth({drop}, subnet=97, quiet=True) as (prog_id, inner, outer):
    open(STATS, "w").write("1")
    watch = None
    out = tempfile.TemporaryFile("w+")  # not a pipe: nothing blocks kdbg's writes
    try:
        watch = subprocess.Popen([sys.executable, "-m", "kdbg", "watch", "--bpf", "--json",
                                  "--prog", str(prog_id)],
                                 stdout=out, stderr=subprocess.PIPE, text=True)
        first = watch.stderr.readline()
        assert first.startswith("kdbg: watching"), first + watch.stderr.read()
        before = runs(prog_id)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent, end = 0, time.monotonic() + {seconds}
        while time.monotonic() < end:
            for _ in range(100):
                s.sendto(b"flood", ("10.97.0.2", {drop}))
            sent += 100
        time.sleep(1)
        after = runs(prog_id)
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=300)
        out.seek(0)
    finally:
        open(STATS, "w").write(was)
        if watch is not None and watch.poll() is None:
            watch.kill()
    print(json.dumps({{"prog": prog_id, "inner": inner, "outer": outer,
                       "status": watch.returncode,
                       "runs": after - before, "sent": sent, "out": out.read(),
                       "err": first + err}}))
"""


@pytest.mark.slow
def test_a_flood_is_printed_or_counted_per_key_to_the_last_verdict(default_lab: str) -> None:
    script = SCENARIO.format(root=str(ROOT), drop=DROP_PORT, seconds=FLOOD_S)
    done = labmod.run(default_lab, [sys.executable, "-c", script], timeout=1200)
    assert done.status == 0, done.stderr.decode()[-3000:]
    res = json.loads(done.stdout.decode().splitlines()[-1])
    assert res["status"] == 0, res["err"]
    recs = [json.loads(line) for line in res["out"].splitlines()]
    drops = [r for r in recs if r["type"] == "drop"]
    more = [r for r in recs if r["type"] == "more"]
    (summary,) = [r for r in recs if r["type"] == "summary"]
    assert more, f"the ring never overran: {summary}"
    counted = sum(m["count"] for m in more)
    assert (summary["shown"], summary["summarized"], summary["lost"]) == (
        len(drops), counted, 0)
    assert len(drops) + counted == summary["matched"] == res["runs"], (summary, res["runs"])
    for r in drops + more:
        assert (r["reason"], r["dport"], r["ifname"]) == ("XDP_DROP", DROP_PORT, res["inner"])
        assert (r["prog"]["id"], r["prog"]["name"]) == (res["prog"], "kdbg_test_xdp")
    assert all(m["by"][-1] == "dport" and m["saddr"] == "10.97.0.1" for m in more)
    left = labmod.run(default_lab, ["sh", "-c", "ip netns list; ip -o link"], timeout=120)
    assert "bpfx" not in left.stdout.decode() and res["outer"] not in left.stdout.decode()
