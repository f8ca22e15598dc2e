"""Compile BPF C with bcc, in a child process: ``python -m kdbg.trace.bccbuild FUNC...``.

Reads the C text on stdin, compiles it with bcc (clang, in process: about 0.45 s and
200 MB here) and prints one JSON object on stdout: each function's instructions, the
maps bcc created for it (type, sizes, flags) and, per function, which instructions load
which map. :mod:`kdbg.trace.objcache` keeps that per program text and kernel, and
loads it without bcc, so a kdbg that finds its program cached never starts clang and
never maps LLVM (kdbg watch --write stays small). A failure is one line on stderr and
a non-zero status: 3 for a compile error, 4 when bcc cannot be imported.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes as ct
import json
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from kdbg.trace import bpfsys
from kdbg.trace.objcache import CFLAGS, EXIT_COMPILE, EXIT_NO_BCC, summarize

try:  # only this child process imports bcc
    from bcc import BPF, lib
except ImportError as _err:  # pragma: no cover - depends on the host
    BPF, lib, IMPORT_ERROR = None, None, str(_err)
else:
    IMPORT_ERROR = ""
    # Not declared by bcc's own bindings.
    lib.bpf_num_tables.restype = ct.c_ulonglong
    lib.bpf_num_tables.argtypes = [ct.c_void_p]
    lib.bpf_table_name.restype = ct.c_char_p
    lib.bpf_table_name.argtypes = [ct.c_void_p, ct.c_ulonglong]
    lib.bpf_table_fd_id.restype = ct.c_int
    lib.bpf_table_fd_id.argtypes = [ct.c_void_p, ct.c_ulonglong]

LD_IMM64 = 0x18
PSEUDO_MAP_FD = 1


@contextlib.contextmanager
def captured_stderr() -> Iterator[Any]:
    """Collect what clang writes to fd 2 while compiling."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: (tmp.seek(0), tmp.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def map_loads(insns: bytes, names_by_fd: dict[int, str]) -> list[tuple[int, str]]:
    """(instruction index, map name) of every ``ld_imm64`` of a map fd in ``insns``."""
    out = []
    for i in range(len(insns) // 8):
        op, regs, _off, imm = struct.unpack_from("<BBhi", insns, i * 8)
        if op == LD_IMM64 and regs >> 4 == PSEUDO_MAP_FD and imm in names_by_fd:
            out.append((i, names_by_fd[imm]))
    return out


def compile_text(text: str, funcs: list[str]) -> dict[str, Any]:
    """Compile ``text``; the JSON-ready program (see the module's docstring)."""
    b = BPF(text=text, cflags=CFLAGS)
    names_by_fd: dict[int, str] = {}
    maps = []
    for i in range(lib.bpf_num_tables(b.module)):
        name = lib.bpf_table_name(b.module, i)
        fd = lib.bpf_table_fd_id(b.module, i)
        info = bpfsys.map_info(fd)
        names_by_fd[fd] = name.decode()
        maps.append({"name": name.decode(), "type": info.type, "key_size": info.key_size,
                     "value_size": info.value_size, "max_entries": info.max_entries,
                     "flags": info.map_flags})
    programs = {}
    for fn in funcs:
        insns = b.dump_func(fn)
        programs[fn] = {"insns": base64.b64encode(insns).decode(),
                        "maps": map_loads(insns, names_by_fd)}
    license_ = lib.bpf_module_license(b.module).decode()
    b.cleanup()
    return {"license": license_, "maps": maps, "programs": programs}


def main(argv: list[str]) -> int:
    """Compile stdin's C for the functions named in ``argv``; JSON on stdout."""
    if BPF is None:
        print(f"cannot import bcc ({IMPORT_ERROR})", file=sys.stderr)
        return EXIT_NO_BCC
    text = sys.stdin.read()
    failed = None
    with captured_stderr() as log:
        try:
            out = compile_text(text, argv)
        except Exception:  # bcc raises plain Exceptions with clang's output on fd 2
            failed = summarize(log())
    if failed is not None:
        print(failed, file=sys.stderr)
        return EXIT_COMPILE
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
