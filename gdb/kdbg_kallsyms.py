"""gdb-side helper: name kernel frames from a kallsyms file when gdb has no symbols.

Loaded by kdbg with ``source gdb/kdbg_kallsyms.py`` (gdb runs with ``--nx``). Runs in
gdb's embedded Python, so it imports nothing from kdbg.

Commands:
  kdbg-kallsyms FILE   read a copy of the target's /proc/kallsyms; from then on ``bt``
                       shows ``function+0xoff [module]`` instead of ``??``
  kdbg-sym ADDR        print ADDR as ``symbol+0xoff``
"""

from __future__ import annotations

import bisect

from gdb.FrameDecorator import FrameDecorator  # type: ignore[import-not-found]

import gdb  # type: ignore[import-not-found]

_TEXT = frozenset("tTwW")


class KallsymsTable:
    """Text symbols sorted by address; ``name(addr)`` gives ``sym+0xoff [mod]`` or None."""

    def __init__(self, text: str) -> None:
        rows = []
        etext = None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in _TEXT:
                if len(parts) >= 3 and parts[2] == "_etext":
                    etext = int(parts[0], 16)
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            if parts[2] == "_etext" and len(parts) == 3:
                etext = addr
            mod = parts[3].strip("[]") if len(parts) > 3 else None
            rows.append((addr, parts[2], mod))
        rows.sort(key=lambda r: (r[0], r[1].startswith(("__pfx_", "__cfi_")), r[1]))
        self.rows = []
        for row in rows:
            if self.rows and self.rows[-1][0] == row[0]:
                continue
            self.rows.append(row)
        self.addrs = [r[0] for r in self.rows]
        self.etext = etext

    def name(self, addr: int) -> str | None:
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return None
        base, sym, mod = self.rows[i]
        if mod is None and self.etext is not None and addr >= self.etext:
            nxt = self.rows[i + 1] if i + 1 < len(self.rows) else None
            if nxt is None or nxt[2] is None:
                return None
        text = f"{sym}+0x{addr - base:x}"
        return f"{text} [{mod}]" if mod else text


TABLE: KallsymsTable | None = None


class _Named(FrameDecorator):  # type: ignore[misc]
    def function(self):  # type: ignore[no-untyped-def]
        frame = self.inferior_frame()
        if frame.name() is None:
            named = TABLE.name(frame.pc()) if TABLE is not None else None
            return named or "??"
        return super().function()


class _Filter:
    """Frame filter that decorates every frame with its kallsyms name."""

    def __init__(self) -> None:
        self.name = "kdbg-kallsyms"
        self.priority = 100
        self.enabled = True
        gdb.frame_filters[self.name] = self

    def filter(self, frames):  # type: ignore[no-untyped-def]
        return map(_Named, frames)


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
            with open(path) as f:
                TABLE = KallsymsTable(f.read())
        except OSError as err:
            raise gdb.GdbError(f"kdbg-kallsyms: {err}") from err
        if "kdbg-kallsyms" not in gdb.frame_filters:
            _Filter()
        print(f"kdbg: {len(TABLE.rows)} kernel text symbols from {path}")


class _Sym(gdb.Command):  # type: ignore[misc]
    """kdbg-sym ADDR: print ADDR (an expression) as symbol+0xoff from kallsyms."""

    def __init__(self) -> None:
        super().__init__("kdbg-sym", gdb.COMMAND_DATA)

    def invoke(self, arg: str, from_tty: bool) -> None:
        if TABLE is None:
            raise gdb.GdbError("kdbg-sym: load a table first with kdbg-kallsyms FILE")
        addr = int(gdb.parse_and_eval(arg)) & 0xFFFFFFFFFFFFFFFF
        print(f"0x{addr:x} {TABLE.name(addr) or '??'}")


_Load()
_Sym()
