"""gdb-side helper: ``kdbg-break``, a ``break`` that asks kdbg's safety guard first.

Loaded by kdbg with ``source gdb/kdbg_guard.py`` (gdb runs with ``--nx``). Unlike
the other helpers it imports kdbg itself (:mod:`kdbg.guard` needs only the
standard library), from the checkout this file lives in.

Commands:
  kdbg-guard transport gdbstub|kgdboc|kgdboe   how this gdb reaches the target
  kdbg-guard kallsyms FILE [BTF]               the target's kallsyms (and BTF) copies
  kdbg-guard vmlinux FILE [OFFSET]             vmlinux with DWARF, KASLR offset (default:
                                               computed from kallsyms _stext)
  kdbg-guard show                              the guard's settings
  kdbg-guard check LOCATION                    print the decision, set nothing
  kdbg-guard step-check COMMAND                before a step, next, finish or until on a
                                               transport whose steps the guard judges
                                               (kdbg_steps.gdb): refuse it when it would
                                               trap or break where the guard refuses
  kdbg-break [--force] [--hw] LOCATION         check, then ``break *ADDR``; refused
                                               breakpoints are not set unless --force
  kdbg-refuse TEXT                             fail with TEXT (kdbg's hooks refuse a
                                               command with it: kdbg_kgdb.gdb)

LOCATION is ``SYM``, ``SYM+0xOFF`` or ``0xADDR``. While the target is stopped, the
frames of the current backtrace are given to the guard as the captured stack, so a
refusal can suggest the nearest safe frame.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gdb  # type: ignore[import-not-found]

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from kdbg.errors import KdbgError  # noqa: E402
from kdbg.guard import TRANSPORTS, check, render  # noqa: E402
from kdbg.symbols.evidence import TargetSymbols  # noqa: E402


class _State:
    """The guard's settings in this gdb, and the TargetSymbols built from them."""

    def __init__(self) -> None:
        self.transport: str | None = None
        self.kallsyms: str | None = None
        self.btf: str | None = None
        self.vmlinux: str | None = None
        self.offset: int | None = None
        self._symbols: TargetSymbols | None = None

    def reset(self) -> None:
        if self._symbols is not None:
            self._symbols.close()
        self._symbols = None

    def symbols(self) -> TargetSymbols:
        if self.kallsyms is None:
            raise gdb.GdbError("kdbg-guard: give the target's kallsyms first: "
                               "kdbg-guard kallsyms FILE")
        if self._symbols is None:
            self._symbols = TargetSymbols.from_parts(
                Path(self.kallsyms).read_text(), btf_path=self.btf, vmlinux=self.vmlinux,
                kaslr_offset=self.offset, name=self.kallsyms)
        return self._symbols


STATE = _State()


def _stack() -> tuple[int, ...]:
    """PCs of the current backtrace (innermost first), or () when not stopped."""
    pcs: list[int] = []
    try:
        frame = gdb.newest_frame()
        while frame is not None and len(pcs) < 32:
            pcs.append(int(frame.pc()) & 0xFFFFFFFFFFFFFFFF)
            frame = frame.older()
    except gdb.error:
        pass
    return tuple(pcs)


def _decide(location: str, force: bool) -> Any:
    if STATE.transport is None:
        raise gdb.GdbError("kdbg-guard: set the transport first: kdbg-guard transport "
                           + "|".join(TRANSPORTS))
    try:
        return check(location, transport=STATE.transport, symbols=STATE.symbols(),
                     stack=_stack(), force=force)
    except KdbgError as err:
        raise gdb.GdbError(f"kdbg-guard: {err}") from err


def _step_check(command: str) -> None:
    """Refuse ``command`` when the pc it traps at, or the return address where a next,
    finish or until breaks, is an address the guard refuses on this transport."""
    stack = _stack()
    if not stack:
        return  # not stopped: gdb says so itself
    places = {"finish": stack[1:2]}.get(command, stack[:2])
    for addr in places:
        decision = _decide(f"0x{addr:x}", False)
        if decision.refused:
            raise gdb.GdbError(
                f"kdbg: {command} refused on {decision.transport}: it would stop the kernel "
                f"at {decision.target} ({decision.rule}: {decision.why}); 'kdbg-done' "
                "resumes the target")


class _Guard(gdb.Command):  # type: ignore[misc]
    """Configure kdbg's breakpoint guard: kdbg-guard transport|kallsyms|vmlinux|show|check."""

    def __init__(self) -> None:
        super().__init__("kdbg-guard", gdb.COMMAND_BREAKPOINTS, gdb.COMPLETE_FILENAME)

    def invoke(self, arg: str, from_tty: bool) -> None:
        argv = gdb.string_to_argv(arg)
        if not argv:
            raise gdb.GdbError("usage: kdbg-guard transport|kallsyms|vmlinux|show|check ...")
        what, rest = argv[0], argv[1:]
        if what == "transport" and len(rest) == 1 and rest[0] in TRANSPORTS:
            STATE.transport = rest[0]
        elif what == "kallsyms" and len(rest) in (1, 2):
            STATE.kallsyms, STATE.btf = rest[0], (rest[1] if len(rest) == 2 else None)
            STATE.reset()
        elif what == "vmlinux" and len(rest) in (1, 2):
            STATE.vmlinux = rest[0]
            STATE.offset = int(rest[1], 0) if len(rest) == 2 else None
            STATE.reset()
        elif what == "show" and not rest:
            gdb.write(f"transport={STATE.transport} kallsyms={STATE.kallsyms} btf={STATE.btf} "
                      f"vmlinux={STATE.vmlinux} kaslr_offset={STATE.offset}\n")
        elif what == "check" and len(rest) == 1:
            gdb.write(render(_decide(rest[0], False)) + "\n")
        elif what == "step-check" and len(rest) == 1:
            _step_check(rest[0])
        else:
            raise gdb.GdbError(f"kdbg-guard: cannot parse {arg!r}")


class _Break(gdb.Command):  # type: ignore[misc]
    """kdbg-break [--force] [--hw] LOCATION: break only where the guard allows."""

    def __init__(self) -> None:
        super().__init__("kdbg-break", gdb.COMMAND_BREAKPOINTS)

    def invoke(self, arg: str, from_tty: bool) -> None:
        argv = gdb.string_to_argv(arg)
        flags = {a for a in argv if a.startswith("--")}
        where = [a for a in argv if not a.startswith("--")]
        if len(where) != 1 or flags - {"--force", "--hw"}:
            raise gdb.GdbError("usage: kdbg-break [--force] [--hw] SYM|SYM+0xOFF|0xADDR")
        decision = _decide(where[0], "--force" in flags)
        if decision.verdict != "allow" or decision.forced:
            gdb.write(render(decision) + "\n")
        if decision.refused:
            raise gdb.GdbError(f"kdbg-break: refused on {decision.transport} "
                               f"({decision.rule}); not set. Use --force to override.")
        if decision.forced:
            gdb.write("kdbg-break: WARNING: refused breakpoint forced; the session may hang\n")
        cmd = "hbreak" if "--hw" in flags else "break"
        gdb.execute(f"{cmd} *0x{decision.target.address:x}", from_tty)


class _Refuse(gdb.Command):  # type: ignore[misc]
    """kdbg-refuse TEXT: fail with TEXT (a hook that refuses the command it hooks)."""

    def __init__(self) -> None:
        super().__init__("kdbg-refuse", gdb.COMMAND_SUPPORT)

    def invoke(self, arg: str, from_tty: bool) -> None:
        raise gdb.GdbError(arg.strip() or "kdbg: refused")


_Guard()
_Break()
_Refuse()
