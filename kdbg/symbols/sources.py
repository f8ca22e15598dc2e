"""Source file names as a kernel developer reads them: relative to the kernel tree.

Debian builds its kernels with the build path mapped away, so their DWARF names read
``net/ipv4/tcp_ipv4.c``. A kernel built out of tree (``make O=BUILD``, as ``kdbg lab
build-kernel`` does) records absolute paths into its source tree, and ``./...`` for
files generated in the build directory. These helpers strip both, so every kernel's
frames read the same way (``kernel/time/hrtimer.c:2084``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path


@functools.lru_cache(maxsize=16)
def source_roots(vmlinux: str | Path | None) -> tuple[str, ...]:
    """Directory prefixes to strip from ``vmlinux``'s file names: for an out-of-tree
    build, the source tree its build directory's ``source`` link points at, and the
    build directory itself (both as given and resolved)."""
    if vmlinux is None:
        return ()
    build = Path(vmlinux).parent
    roots: list[str] = []
    link = build / "source"
    if link.is_symlink() or link.is_dir():
        roots.append(os.path.realpath(link))
        roots.append(str(link))
    roots += [os.path.realpath(build), str(build)]
    out: list[str] = []
    for root in roots:
        root = root.rstrip("/") + "/"
        if root != "/" and root not in out:
            out.append(root)
    return tuple(sorted(out, key=len, reverse=True))  # the longest prefix first


def tree_relative(name: str | None, roots: tuple[str, ...]) -> str | None:
    """``name`` relative to the kernel tree when it lies under one of ``roots``."""
    if not name:
        return name
    for root in roots:
        if name.startswith(root):
            return name[len(root):]
    return name.removeprefix("./")


@functools.lru_cache(maxsize=64)
def _lines(path: str) -> tuple[str, ...]:
    try:
        with open(path, errors="replace") as f:
            return tuple(f.read().splitlines())
    except OSError:
        return ()


def line_text(path: str | None, line: int | None) -> str | None:
    """The text of ``line`` (1-based) of the source file at ``path`` (what gdb calls a
    frame's ``fullname``, found through its source directories), stripped; None when
    the file or the line is not there."""
    if not path or not line or line < 1:
        return None
    lines = _lines(path)
    return lines[line - 1].strip() if line <= len(lines) else None
