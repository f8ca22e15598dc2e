"""Reading a stopped target: registers, memory, expressions, symbols, instructions,
backtraces; and the debug files of modules, for gdb to name and unwind with."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kdbg.debugger import dropsite
from kdbg.debugger.gdbproc import GdbProcess
from kdbg.debugger.mi import Record, as_int
from kdbg.debugger.model import Frame, Instruction, Stop
from kdbg.debugger.state import SessionState
from kdbg.errors import BadInput, GdbError, KdbgError
from kdbg.symbols import bpfjit
from kdbg.symbols.dropargs import ARG_REGISTERS
from kdbg.symbols.droplines import ModuleDebug
from kdbg.symbols.sources import line_text, source_roots, tree_relative

_WINDOW = 64  # bytes disassembled before a return address before falling back to the start


class Inspection:
    """What a session reads from the target while it is stopped, through the session's
    gdb, naming addresses from what its state knows (kallsyms, the vmlinux)."""

    def __init__(self, gdb: GdbProcess, state: SessionState) -> None:
        self.gdb, self.state = gdb, state
        self._regnums: dict[str, int] | None = None
        self._sym_cache: dict[int, tuple[str | None, int, str | None]] = {}

    def registers(
        self, names: Sequence[str] | None = None, timeout: float = 10.0
    ) -> dict[str, int]:
        """Register values by name (all general-purpose ones when ``names`` is None)."""
        if self._regnums is None:
            reply = self.gdb.command("-data-list-register-names", timeout)
            self._regnums = {
                n: i for i, n in enumerate(reply.payload.get("register-names", [])) if n
            }
        wanted = list(names) if names is not None else [
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "eflags",
        ]  # fmt: skip
        unknown = [n for n in wanted if n not in self._regnums]
        if unknown:
            raise BadInput(f"unknown register(s): {', '.join(unknown)}")
        nums = " ".join(str(self._regnums[n]) for n in wanted)
        reply = self.gdb.command(f"-data-list-register-values x {nums}", timeout)
        bynum = {as_int(v.get("number")): as_int(v.get("value")) for v in
                 reply.payload.get("register-values", [])}  # fmt: skip
        return {n: bynum.get(self._regnums[n]) or 0 for n in wanted}

    def read_args(self, count: int = 6) -> list[int]:
        """The first ``count`` integer arguments (x86-64 SysV: rdi, rsi, rdx, rcx, r8, r9),
        valid at a function's entry or at a call instruction (a drop site)."""
        names = ARG_REGISTERS[: max(0, min(count, len(ARG_REGISTERS)))]
        regs = self.registers(names)
        return [regs[n] for n in names]

    def read_memory(self, addr: int, length: int, timeout: float = 10.0) -> bytes:
        """``length`` bytes of target memory at ``addr``."""
        reply = self.gdb.command(f"-data-read-memory-bytes 0x{addr:x} {length}", timeout)
        blocks = reply.payload.get("memory", [])
        return bytes.fromhex("".join(str(b.get("contents", "")) for b in blocks))

    def evaluate(self, expr: str, timeout: float = 10.0) -> str:
        """gdb's value of the C expression ``expr`` (with the vmlinux's DWARF types), as text."""
        reply = self.gdb.command(f'-data-evaluate-expression "{expr}"', timeout)
        return str(reply.payload.get("value", ""))

    def symbolize(self, addr: int) -> tuple[str | None, int, str | None]:
        """(symbol, offset, module) for ``addr`` from kallsyms, else from gdb's symbols."""
        if self.state.kallsyms is not None:
            loc = self.state.kallsyms.lookup(addr)
            return loc.symbol, loc.offset, loc.module
        if addr in self._sym_cache:
            return self._sym_cache[addr]
        result: tuple[str | None, int, str | None] = (None, 0, None)
        if self.state.vmlinux is not None and self.gdb.alive:
            with contextlib.suppress(GdbError):
                text = self.gdb.console(f"info symbol 0x{addr:x}", 10.0)
                m = re.match(r"(\S+)(?: \+ (\d+))? in section", text)
                if m:
                    result = (m[1], int(m[2] or 0), None)
        self._sym_cache[addr] = result
        return result

    def expand(self, addresses: Sequence[int], timeout: float = 30.0) -> None:
        """Have gdb read the debug info covering ``addresses`` now (their compilation
        units' symbols and lines), ahead of a stop there: the first backtrace through
        code gdb had not looked at took 0.09-0.12 s under TCG, the next ones 3 ms. Reads
        only gdb's files, so the target may be running."""
        if not addresses or not self.state.has_dwarf:
            return
        pcs = ",".join(f"0x{a:x}" for a in addresses)
        with contextlib.suppress(GdbError):
            self.gdb.console(f"python [gdb.find_pc_line(a) for a in ({pcs},)]", timeout)

    def forget_symbols(self) -> None:
        """Forget the names gdb gave (the target's kallsyms changed)."""
        self._sym_cache.clear()

    def load_modules(self, modules: Sequence[ModuleDebug], timeout: float = 120.0
                     ) -> list[str]:
        """Give gdb the debug files of loaded modules (``add-symbol-file`` at their
        section addresses), so stops and backtraces in modules get DWARF lines and
        unwind through them. Returns the names loaded; a file gdb cannot read is
        skipped."""
        loaded = []
        for module in modules:
            try:
                self.gdb.console(module.gdb_command(), timeout)
            except KdbgError:
                continue
            loaded.append(module.name)
        return loaded

    def load_jited(self, images: Sequence[bpfjit.JitedImage],
                   lines: Sequence[bpfjit.JitedLine] = (), timeout: float = 30.0) -> Path:
        """Give gdb the JITed BPF functions ``images`` as symbols, with the source lines
        ``lines``: a synthetic symbol file (:func:`kdbg.symbols.bpfjit.symbol_file`) in
        the temporary directory, loaded with ``add-symbol-file`` and deleted when the
        session closes."""
        fd, name = tempfile.mkstemp(prefix="kdbg-bpf-", suffix=".elf")
        path = Path(name)
        self.state.symbol_files.append(path)
        with os.fdopen(fd, "wb") as out:
            out.write(bpfjit.symbol_file(tuple(images), tuple(lines)))
        self.gdb.console(f"add-symbol-file {path}", timeout)
        self._sym_cache.clear()
        return path

    def call_before(self, ret: int, timeout: float = 10.0) -> Instruction | None:
        """The call instruction ending at ``ret``, decoded from a known boundary; or None."""
        sym, off, _ = self.symbolize(ret)
        start = ret - off if sym is not None else None
        windows = []
        if start is None or off > _WINDOW:
            windows.append(ret - _WINDOW)
        if start is not None and off <= 0x10000:
            windows.append(start)
        for begin in windows:
            reply = self.gdb.command(
                f"-data-disassemble -s 0x{begin:x} -e 0x{ret:x} -- 2", timeout
            )
            insns = dropsite.instructions(reply.payload.get("asm_insns", []))
            ins = dropsite.call_before(insns, ret)
            if ins is not None:
                return ins
        return None

    def backtrace(self, limit: int = 32, timeout: float = 20.0) -> tuple[list[Frame], str | None]:
        """The frames kdbg can vouch for, and why the list ends early (or None).

        With DWARF (a debug vmlinux) gdb's unwinding is trusted while frames stay in
        kernel text. Without it (ORC kernels have no frame pointers), frame N>0 is kept
        only if the instruction before its return address is a direct call to the
        function of frame N-1; the first frame that fails ends the list.
        """
        reply = self.gdb.command(
            f"-stack-list-frames --no-frame-filters 0 {max(limit - 1, 0)}", timeout
        )
        raw = reply.payload.get("stack", [])
        dwarf = self.state.has_dwarf
        roots = source_roots(self.state.vmlinux) if dwarf else ()
        frames: list[Frame] = []
        for item in raw:
            f = item.get("frame", item) if isinstance(item, dict) else {}
            addr = as_int(f.get("addr"))
            level = as_int(f.get("level"))
            if addr is None or level is None:
                break
            sym, off, mod = self.symbolize(addr)
            # With the target's kallsyms, text is what it covers (core and module text):
            # gdb names any address its DWARF has a symbol at, per-CPU data at 0x6 too.
            in_text = sym is not None or (
                self.state.kallsyms is None and f.get("func") not in (None, "??"))
            if not in_text:
                return frames, f"frame {level} (0x{addr:x}) is not in kernel text"
            if dwarf:
                if sym is None:
                    sym, off = str(f.get("func")), 0
            elif frames:
                why = self._verify_return(frames[-1], addr, level, timeout)
                if why is not None:
                    return frames, why
            frames.append(
                Frame(
                    level=level,
                    address=addr,
                    symbol=sym,
                    offset=off,
                    file=tree_relative(f.get("file"), roots) if dwarf else None,
                    line=as_int(f.get("line")) if dwarf else None,
                    module=mod,
                    text=line_text(f.get("fullname"), as_int(f.get("line"))) if dwarf else None,
                )
            )
        if len(raw) >= limit:
            return frames, f"limited to {limit} frames"
        return frames, None

    def _verify_return(self, callee: Frame, ret: int, level: int, timeout: float) -> str | None:
        hint = "no DWARF: load the -dbg vmlinux, or use the tracer's in-kernel stack"
        ins = self.call_before(ret, timeout)
        if ins is None:
            return f"frame {level} (0x{ret:x}) does not follow a call; {hint}"
        target, _ = dropsite.call_target(ins.text)
        if target is None or callee.symbol is None:
            return f"frame {level} (0x{ret:x}) follows an indirect call; {hint}"
        tsym, toff, _ = self.symbolize(target)
        if tsym != callee.symbol or toff != 0:
            return f"frame {level} (0x{ret:x}) calls {tsym}, not {callee.symbol}; {hint}"
        return None

    def stop_from(self, rec: Record, *, backtrace: bool, limit: int) -> Stop:
        """The :class:`Stop` gdb's ``*stopped`` record ``rec`` reports (with the
        backtrace kdbg can vouch for, up to ``limit`` frames, when ``backtrace``)."""
        p = rec.payload
        frame = p.get("frame", {}) if isinstance(p.get("frame"), dict) else {}
        addr = as_int(frame.get("addr")) or self.registers(["rip"])["rip"]
        sym, off, _ = self.symbolize(addr)
        frames: tuple[Frame, ...] = ()
        truncated = None
        if backtrace:
            flist, truncated = self.backtrace(limit)
            frames = tuple(flist)
        return Stop(
            reason=str(p.get("reason", "signal-received" if "signal-name" in p else "stopped")),
            address=addr,
            symbol=sym,
            offset=off,
            breakpoint=as_int(p.get("bkptno")),
            thread=p.get("thread-id"),
            backtrace=frames,
            truncated=truncated,
            file=tree_relative(frame.get("file"), source_roots(self.state.vmlinux)),
            line=as_int(frame.get("line")),
            seen_at=rec.at,
        )
