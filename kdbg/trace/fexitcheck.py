"""Whether this kernel lets kdbg trace BPF programs (``kdbg watch --bpf``): a program
of two instructions with its own BTF is loaded as XDP, and a two-instruction fexit
program is loaded on it and attached, then all of it is closed. ``kdbg doctor``'s
``bpf progs`` line."""

from __future__ import annotations

import os
import struct
from contextlib import ExitStack

from kdbg.errors import ProbeUnavailable
from kdbg.trace import bpfsys

# mov r0, IMM; exit
RETURN_PASS = struct.pack("<BBhi", 0xB7, 0, 0, 2) + struct.pack("<BBhi", 0x95, 0, 0, 0)
RETURN_ZERO = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
FUNC_ID = 3  # of "kdbg_probe" in :func:`probe_btf`


def probe_btf() -> bytes:
    """BTF of ``static int kdbg_probe(void)``: int, its prototype, the function."""
    strings = b"\0int\0kdbg_probe\0"
    types = (struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)  # [1] int: signed, 32 bits
             + struct.pack("<III", 0, 13 << 24, 1)  # [2] func_proto () -> int
             + struct.pack("<III", 5, 12 << 24, 2))  # [3] func kdbg_probe, static
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                         len(strings))
    return header + types + strings


def check() -> str:
    """What was seen, or ProbeUnavailable saying which step the kernel refused."""
    with ExitStack() as fds:
        step = "loading BTF"
        try:
            btf = bpfsys.btf_load(probe_btf())
            fds.callback(os.close, btf)
            step = "loading an XDP program with BTF"
            xdp = bpfsys.prog_load_btf(bpfsys.PROG_XDP, RETURN_PASS, "kdbg_probe", btf,
                                       struct.pack("<II", 0, FUNC_ID))
            fds.callback(os.close, xdp)
            step = "loading an fexit program on it"
            fd, _ = bpfsys.prog_load(bpfsys.PROG_TRACING, RETURN_ZERO, "kdbg_probe_exit",
                                     btf_id=FUNC_ID, target_fd=xdp)
            if fd < 0:
                raise bpfsys.BpfCallError(-fd, os.strerror(-fd))
            fds.callback(os.close, fd)
            step = "attaching it"
            fds.callback(os.close, bpfsys.raw_tracepoint_open(None, fd))
        except bpfsys.BpfCallError as err:
            raise ProbeUnavailable(
                f"this kernel cannot trace BPF programs: {step} failed ({err.strerror})",
                hint="kdbg watch --bpf needs fexit on BPF programs (BTF, a JIT, "
                     "BPF trampolines); the lab kernels have them") from None
    return "fexit on an XDP program loads and attaches (kdbg watch --bpf works)"
