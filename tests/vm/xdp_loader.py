"""Load tests/data/bpfprog/xdp_drop_port.c on a device with bcc, in this process's
network namespace, until stdin closes: ``xdp_loader.py DEV PORT``. Prints ``ready ID``
(the program's id) once attached, and removes the program from the device at the end.
Run in a lab guest by tests/vm/test_bpf_drops.py (under ``ip netns exec``).

``xdp_loader.py --record FILE PORT`` loads it attached to nothing and writes what
kdbg reads about it (:meth:`kdbg.trace.bpfprogs.ProgFacts.to_record`) to FILE: the
recording tests/unit/test_bpflines.py reads.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bcc import BPF

from kdbg.trace import bpfprogs, bpfsys

SOURCE = Path(__file__).resolve().parents[1] / "data" / "bpfprog" / "xdp_drop_port.c"


def main(dev: str, port: int) -> int:
    b = BPF(src_file=str(SOURCE).encode(), cflags=[f"-DDROP_PORT={port}"])
    fn = b.load_func("kdbg_test_xdp", BPF.XDP)
    if dev == "--record":
        return record(fn.fd, Path(sys.argv[2]))
    b.attach_xdp(dev, fn, 0)
    try:
        print("ready", bpfsys.prog_info(fn.fd).id, flush=True)
        sys.stdin.read()
    finally:
        b.remove_xdp(dev, 0)
    return 0


def record(fd: int, out: Path) -> int:
    prog = bpfprogs.open_prog(bpfsys.prog_info(fd).id, frozenset({bpfsys.PROG_XDP}))
    assert prog is not None
    os.close(prog.fd)
    rec = {"kernel": os.uname().release, "source": SOURCE.name, **prog.to_record()}
    out.write_text(json.dumps(rec, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[-1])))
