"""A lab kernel's exact source and Linux's own gdb scripts (:class:`KernelSource`), and
the answer for a kernel that is a build tree: the tree itself.

What gdb needs to show source lines is a list of directories that every DWARF file name
of the vmlinux and its modules resolves in (gdb's ``directory``); what gives it Linux's
helpers (``lx-dmesg``, ``lx-ps``, ``$lx_current()``) is the tree's ``vmlinux-gdb.py``
with ``scripts/gdb/linux/constants.py`` generated from the kernel's own config. Each
kind of lab kernel (:mod:`kdbg.lab.kinds`) says where its own are: Debian's come from
the matching ``linux-source-X.Y`` package (:mod:`kdbg.lab.debsource`), a build tree
(the kgdb lab kernel, a user's ``--kernel PATH``) has them itself.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbg.lab.kernel import BZIMAGE, image_version_string

GDB_SCRIPTS = "vmlinux-gdb.py"
CONSTANTS = Path("scripts/gdb/linux/constants.py")


@dataclass(frozen=True)
class KernelSource:
    """Where a lab kernel's source and Linux's gdb scripts are.

    ``dirs`` is what gdb's ``directory`` takes so every DWARF file name of the vmlinux
    and its modules resolves (empty: no source); ``gdb_scripts`` the tree's
    ``vmlinux-gdb.py`` with its generated constants (None: no helpers); ``version`` the
    package version or the tree's release it came from; ``note`` one line saying what
    is missing and why (None when the source and the scripts are both there).
    """

    dirs: tuple[Path, ...] = ()
    gdb_scripts: Path | None = None
    version: str | None = None
    note: str | None = None

    def find(self, file: str) -> Path | None:
        """Where the DWARF file name ``file`` is: itself when absolute (a tree built
        here names its files so), else under the first of :attr:`dirs` that has it."""
        path = Path(file)
        if path.is_absolute():
            return path if path.is_file() else None
        return next((d / path for d in self.dirs if (d / path).is_file()), None)

    def line_text(self, file: str, line: int) -> str | None:
        """The text of line ``line`` (1-based) of DWARF file ``file``, trailing blanks
        removed; None when the file is not in the source or has no such line."""
        path = self.find(file)
        if path is None or line < 1:
            return None
        try:
            lines = _lines(path, path.stat().st_mtime_ns)
        except OSError:
            return None
        return lines[line - 1].rstrip() if line <= len(lines) else None

    def to_json(self) -> dict[str, Any]:
        """The record ``kdbg lab source --json`` prints."""
        return {"dirs": [str(d) for d in self.dirs],
                "gdb_scripts": str(self.gdb_scripts) if self.gdb_scripts else None,
                "version": self.version, "note": self.note}


@functools.lru_cache(maxsize=64)
def _lines(path: Path, mtime_ns: int) -> tuple[str, ...]:
    """A source file's lines, read once per version of the file (a hit report asks for
    several lines of the same few files)."""
    return tuple(path.read_text(errors="replace").splitlines())


_BUILD = re.compile(r"\s(#\d+\s.*)$")


def build_of(version_text: str) -> tuple[str, str | None]:
    """A kernel version string as (release, build): ``/proc/version`` (``Linux version
    6.1.192 (root@vm) (gcc ...) #1 SMP ... 2026``) and a bzImage's header (``6.1.192
    (root@vm) #1 SMP ... 2026``) of one build give the same pair; the compiler part,
    which only ``/proc/version`` has, is left out."""
    text = " ".join(version_text.split()).removeprefix("Linux version ")
    found = _BUILD.search(text)
    return text.split(" ", 1)[0], found.group(1) if found else None


def tree_source(tree: Path | None, image: Path, running: str | None) -> KernelSource:
    """The source of a kernel built in ``tree`` (its DWARF names files in the tree, and
    in the source tree its ``source`` link names when built with ``O=``), or the note for
    a bzImage alone (``tree`` None). ``running`` is the kernel's version string; when the
    tree's bzImage is another build (made again since the lab booted), the note says its
    lines may not match. Nothing is written into the tree."""
    if tree is None and not image.is_file():
        return KernelSource(note=f"the kernel image {image} is gone: no source is known")
    if tree is None:
        return KernelSource(note=f"{image} is a bzImage alone, with no build tree beside it: "
                                 "no source lines or Linux gdb scripts (boot a build tree: "
                                 "--kernel TREE)")
    dirs = [tree]
    if (tree / "source").is_dir() and (tree / "source").resolve() != tree.resolve():
        dirs.append((tree / "source").resolve())
    release = tree / "include/config/kernel.release"
    version = release.read_text().strip() if release.is_file() else None
    notes = []
    built = image_version_string(tree / BZIMAGE)
    if running and built and build_of(running) != build_of(built):
        notes.append(f"{tree / BZIMAGE} is not the build that runs ({build_of(built)[1]}, "
                     f"the kernel says {build_of(running)[1]}): its lines may not match")
    scripts = tree / GDB_SCRIPTS
    if not scripts.is_file():
        notes.append(f"no {GDB_SCRIPTS} in {tree}: build it with CONFIG_GDB_SCRIPTS=y or "
                     "`make scripts_gdb`")
    elif not (tree / CONSTANTS).is_file():
        notes.append(f"{tree} has {GDB_SCRIPTS} but no {CONSTANTS}: run `make scripts_gdb` "
                     "there")
    ready = scripts if scripts.is_file() and (tree / CONSTANTS).is_file() else None
    return KernelSource(tuple(dirs), ready, version, "; ".join(notes) or None)
