"""gdb-side helper: name kernel frames from a kallsyms copy when gdb has no symbols.

Loaded by kdbg with ``source gdb/kdbg_kallsyms.py`` (gdb runs with ``--nx``). Like
``kdbg_guard.py`` it imports kdbg itself, from the checkout this file lives in, so
frames are named exactly as kdbg names them: :class:`kdbg.symbols.kallsyms.Kallsyms`,
with the module list kept next to the copy (``NAME.modules``) bounding each module's
names, and ``0xADDR [?]`` where no known text covers an address.

Commands:
  kdbg-kallsyms FILE   read a copy of the target's /proc/kallsyms; from then on ``bt``
                       shows ``function+0xoff [module]`` instead of ``??``, and ends
                       at the first frame no kernel text covers (run it
                       again with a newer copy when the target's modules change)
  kdbg-sym ADDR        print ADDR as ``symbol+0xoff``
"""

from __future__ import annotations

import sys
from pathlib import Path

from gdb.FrameDecorator import FrameDecorator  # type: ignore[import-not-found]

import gdb  # type: ignore[import-not-found]

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from kdbg.errors import KdbgError  # noqa: E402
from kdbg.symbols.kallsyms import Kallsyms  # noqa: E402

TABLE: Kallsyms | None = None


def name(addr: int) -> str | None:
    """``addr`` as kdbg names it, or None without a table."""
    return None if TABLE is None else str(TABLE.lookup(addr))


def in_text(addr: int) -> bool:
    """Whether kernel or module text covers ``addr`` (True without a table)."""
    return TABLE is None or TABLE.lookup(addr).symbol is not None


class _Named(FrameDecorator):  # type: ignore[misc]
    def function(self):  # type: ignore[no-untyped-def]
        frame = self.inferior_frame()
        if frame.name() is None:
            return name(frame.pc()) or "??"
        return super().function()


def _trusted(frames):  # type: ignore[no-untyped-def]
    """The frames up to the first whose pc no kernel text covers: past it, gdb unwinds
    through whatever the stack held (user space, 0x2 named after the per-CPU symbol
    fixed_percpu_data), which no one should read as a frame."""
    for i, frame in enumerate(frames):
        if i > 0 and not in_text(int(frame.inferior_frame().pc()) & 0xFFFFFFFFFFFFFFFF):
            return
        yield frame


class _Filter:
    """Frame filter that decorates every frame with its kallsyms name, and ends the
    backtrace where kernel text ends."""

    def __init__(self) -> None:
        self.name = "kdbg-kallsyms"
        self.priority = 100
        self.enabled = True
        gdb.frame_filters[self.name] = self

    def filter(self, frames):  # type: ignore[no-untyped-def]
        return map(_Named, _trusted(frames))


class _Load(gdb.Command):  # type: ignore[misc]
    """kdbg-kallsyms FILE: name frames from FILE, a copy of the target's /proc/kallsyms."""

    def __init__(self) -> None:
        super().__init__("kdbg-kallsyms", gdb.COMMAND_DATA, gdb.COMPLETE_FILENAME)

    def invoke(self, arg: str, from_tty: bool) -> None:
        global TABLE
        path = arg.strip()
        if not path:
            raise gdb.GdbError("usage: kdbg-kallsyms FILE")
        try:
            TABLE = Kallsyms.load(path)
        except KdbgError as err:
            raise gdb.GdbError(f"kdbg-kallsyms: {err}") from err
        if "kdbg-kallsyms" not in gdb.frame_filters:
            _Filter()
        mods = "" if TABLE.modules is None else f", {len(TABLE.modules)} modules"
        print(f"kdbg: {len(TABLE)} kernel text symbols from {path}{mods}")


class _Sym(gdb.Command):  # type: ignore[misc]
    """kdbg-sym ADDR: print ADDR (an expression) as symbol+0xoff from kallsyms."""

    def __init__(self) -> None:
        super().__init__("kdbg-sym", gdb.COMMAND_DATA)

    def invoke(self, arg: str, from_tty: bool) -> None:
        if TABLE is None:
            raise gdb.GdbError("kdbg-sym: load a table first with kdbg-kallsyms FILE")
        addr = int(gdb.parse_and_eval(arg)) & 0xFFFFFFFFFFFFFFFF
        print(f"0x{addr:x} {name(addr)}")


_Load()
_Sym()
