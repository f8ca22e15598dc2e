"""Load a test program of tests/data/bpfprog with bcc and attach it until stdin closes:
``bpf_loader.py xdp|tc DEV PORT``.

``xdp``: xdp_drop_port.c, on DEV's XDP hook (in this process's network namespace;
run it under ``ip netns exec`` for a device in another). ``tc``: tc_shoot_port.c, on
DEV's egress through a clsact qdisc (pinned in a bpf filesystem for ``tc ...
object-pinned``, the pin removed once tc holds it). Prints ``ready ID`` (the program's
id) once attached, and detaches at the end. Run in a lab guest by
tests/vm/test_bpf_drops.py.

``bpf_loader.py --record-xdp|--record-tc FILE PORT`` loads the program attached to
nothing and writes what kdbg reads about it
(:meth:`kdbg.trace.bpfprogs.ProgFacts.to_record`) to FILE: the recordings
tests/unit/test_bpflines.py reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bcc import BPF

from kdbg.trace import bpfprogs, bpfsys

DATA = Path(__file__).resolve().parents[1] / "data" / "bpfprog"
SOURCES = {"xdp": (DATA / "xdp_drop_port.c", "kdbg_test_xdp", BPF.XDP),
           "tc": (DATA / "tc_shoot_port.c", "kdbg_test_tc", BPF.SCHED_CLS)}
BPFFS = "/sys/fs/bpf"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def attach_tc(dev: str, fd: int) -> None:
    if not os.path.ismount(BPFFS):
        sh("mount", "-t", "bpf", "bpf", BPFFS)
    pin = f"{BPFFS}/kdbg_test_tc_{os.getpid()}"
    bpfsys.obj_pin(fd, pin)
    try:
        sh("tc", "qdisc", "add", "dev", dev, "clsact")
        sh("tc", "filter", "add", "dev", dev, "egress", "bpf", "da", "object-pinned", pin)
    finally:
        os.unlink(pin)


def main(kind: str, dev: str, port: int) -> int:
    recording = kind.startswith("--record-")
    kind = kind.removeprefix("--record-")
    source, func, prog_type = SOURCES[kind]
    b = BPF(src_file=str(source).encode(), cflags=[f"-DDROP_PORT={port}"])
    fn = b.load_func(func, prog_type)
    if recording:
        return record(kind, fn.fd, Path(dev))
    if kind == "xdp":
        b.attach_xdp(dev, fn, 0)
    else:
        attach_tc(dev, fn.fd)
    try:
        print("ready", bpfsys.prog_info(fn.fd).id, flush=True)
        sys.stdin.read()
    finally:
        if kind == "xdp":
            b.remove_xdp(dev, 0)
        else:
            subprocess.run(["tc", "qdisc", "del", "dev", dev, "clsact"], check=False)
    return 0


def record(kind: str, fd: int, out: Path) -> int:
    prog = bpfprogs.open_prog(bpfsys.prog_info(fd).id, frozenset({SOURCES[kind][2]}))
    assert prog is not None
    os.close(prog.fd)
    rec = {"kernel": os.uname().release, "source": SOURCES[kind][0].name, **prog.to_record()}
    out.write_text(json.dumps(rec, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
