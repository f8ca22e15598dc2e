"""Hardware drops on the running kernel: what runs without a devlink device.

The trap reports themselves need a device (netdevsim in the kgdb lab kernel:
tests/vm/test_hwdrops.py); here the program must pass the running kernel's
verifier, and a machine without devlink devices must say so in one line.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from kdbg.dirs import BPF_DIR
from kdbg.hwdrops import devlink, probe
from tests.unit.test_hwdrops import OFFSETS

KDBG = [sys.executable, "-m", "kdbg"]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "count-only"])
def test_program_passes_the_verifier(stream: bool) -> None:
    from bcc import BPF

    bpf: Any = BPF(text=probe.build(OFFSETS, stream=stream).encode(),
                   cflags=[f"-I{BPF_DIR}", "-Wno-unused-variable"])
    try:
        fn = bpf.load_func(probe.FUNC_NAME.encode(), BPF.RAW_TRACEPOINT)
        assert fn.fd >= 0
    finally:
        bpf.cleanup()


def test_no_devlink_device_is_one_line() -> None:
    if devlink.devices():
        pytest.skip("this machine has devlink devices; tests/vm/test_hwdrops.py covers them")
    expected = ("no devlink devices: this kernel has no devlink (CONFIG_NET_DEVLINK), so no "
                "hardware drops to report" if not devlink.has_devlink() else
                "no devlink devices on this machine: no hardware drops to report")
    for args in (["--hw"], ["--hw", "--json", "--count", "3"]):
        proc = subprocess.run([*KDBG, "watch", *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr == f"kdbg: error: {expected}\n"
    proc = subprocess.run([*KDBG, "exporter", "--listen", "127.0.0.1:0", "--duration", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[0] == f"kdbg: {expected}; kdbg_hw_drops_total stays empty"
