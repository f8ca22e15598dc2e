"""Hardware drops from a real devlink device: netdevsim in the kgdb lab kernel.

Debian's kernels do not build netdevsim (``# CONFIG_NETDEVSIM is not set``), so this
runs on the kgdb lab kernel (vm/kgdb-lab.config sets CONFIG_NETDEVSIM=y and
CONFIG_NET_DEVLINK=y). Opt-in like the kgdboc test: it runs once that kernel is
cached (``kdbg lab build-kernel``) and skips, saying so, when it is not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys

import pytest

from tests.conftest import need
from tests.vm.conftest import lab_name

NAME = lab_name("hw")
KDBG = [sys.executable, "-m", "kdbg"]
TRAP = "source_mac_is_multicast"  # a drop trap netdevsim reports once its action is trap

EXPORTER_SCRAPE = """
import subprocess, sys, time, urllib.request
p = subprocess.Popen({kdbg!r} + ["exporter", "--listen", "127.0.0.1:0", "--labels", "reason"],
                     stderr=subprocess.PIPE, text=True)
url = None
while url is None:
    line = p.stderr.readline()
    if not line:
        sys.exit("exporter ended: " + line)
    if line.startswith("kdbg: exporting"):
        url = next(w for w in line.split() if w.startswith("http://"))
# Scrape until netdevsim's periodic trap has been counted (a minute at most).
deadline = time.monotonic() + 60
while True:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    counted = [ln for ln in text.splitlines()
               if ln.startswith("kdbg_hw_drops_total") and {trap!r} in ln
               and float(ln.split()[-1]) > 0]
    if counted or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(text)
p.terminate()
p.wait(timeout=10)
"""


@pytest.mark.slow
def test_netdevsim_trap_reports_in_watch_hw_and_the_exporter() -> None:
    need(os.geteuid() == 0, "the lab needs root (./run test)")
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 missing")
    from kdbg import lab as labmod
    from kdbg.lab import build

    kernel = build.cached_build()
    if kernel is None or kernel.option("NETDEVSIM") != "y":
        pytest.skip("kgdb lab kernel with CONFIG_NETDEVSIM=y not built: "
                    "kdbg lab build-kernel (~18 min on idle cores)")
    with contextlib.suppress(Exception):
        labmod.down(NAME)
    labmod.up(labmod.LabConfig(name=NAME, kernel="built", cpus=1))
    try:
        def sh(cmd: str) -> str:
            done = labmod.run(NAME, ["sh", "-c", cmd], timeout=300)
            assert done.status == 0, (cmd, done.stderr)
            return done.stdout.decode()

        sh("echo '10 1' > /sys/bus/netdevsim/new_device")
        port = sh("ls /sys/bus/netdevsim/devices/netdevsim10/net/").split()[0]
        sh(f"ip link set {port} up")
        sh(f"devlink trap set netdevsim/netdevsim10 trap {TRAP} action trap")

        done = labmod.run(NAME, [*KDBG, "watch", "--hw", "--json", "--count", "20"],
                          timeout=600)
        assert done.status == 0, done.stderr
        recs = [json.loads(x) for x in done.stdout.decode().splitlines()]
        reports = [r for r in recs if r["type"] == "hw_drop"]
        assert len(reports) == 20
        assert {r["device"] for r in reports} == {"netdevsim/netdevsim10"}
        assert all(r["driver"] == "netdevsim" and r["trap"] for r in reports)
        ours = [r for r in reports if r["trap"] == TRAP]
        assert ours, sorted({r["trap"] for r in reports})
        for r in ours:
            assert (r["group"], r["action"], r["trap_type"]) == ("l2_drops", "trap", "drop")
            assert r["input_port"] == port
            # netdevsim builds each trapped packet as UDP 192.0.2.1 -> 198.51.100.1
            assert (r["saddr"], r["daddr"], r["proto"]) == ("192.0.2.1", "198.51.100.1", "udp")

        scrape = EXPORTER_SCRAPE.format(kdbg=KDBG, trap=f'trap="{TRAP}"')
        done = labmod.run(NAME, [sys.executable, "-c", scrape], timeout=600)
        assert done.status == 0, done.stderr
        from prometheus_client.parser import text_string_to_metric_families

        hw = {tuple(sorted(s.labels.items())): s.value
              for f in text_string_to_metric_families(done.stdout.decode())
              for s in f.samples if s.name == "kdbg_hw_drops_total"}
        key = (("device", "netdevsim/netdevsim10"), ("group", "l2_drops"),
               ("input_port", port), ("trap", TRAP))
        assert hw.get(key, 0) > 0, hw
    finally:
        labmod.down(NAME)
