"""Running and stopping the target, and breakpoints through the session's guard."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

from kdbg.debugger import dropsite
from kdbg.debugger.errors import NotADropSite
from kdbg.debugger.gdbproc import GdbProcess
from kdbg.debugger.inspection import Inspection
from kdbg.debugger.mi import as_int
from kdbg.debugger.model import Breakpoint, DropSite, Instruction, Stop
from kdbg.debugger.state import SessionState, is_stopped
from kdbg.dirs import GDB_DIR
from kdbg.errors import BadInput, GdbError, GdbTimeout
from kdbg.guard.decision import Decision
from kdbg.guard.judge import Guard


class RunControl:
    """Resume, interrupt and wait for the target; set and delete breakpoints, each
    judged first by the session's guard. Stops are read through ``inspect``."""

    def __init__(self, gdb: GdbProcess, state: SessionState, guard: Guard,
                 inspect: Inspection) -> None:
        self.gdb, self.state, self.guard, self.inspect = gdb, state, guard, inspect

    def resume(self, timeout: float = 10.0) -> None:
        """Continue the target (no-op if it runs). Breakpoints are armed when this returns."""
        if self.state.running:
            return
        self.gdb.command("-exec-continue", timeout)
        self.state.running = True

    def interrupt(self, timeout: float = 10.0) -> Stop:
        """Stop a running target the way its transport allows, and report where it is."""
        self.gdb.poll(0)
        if not self.state.running:
            raise GdbError("the target is not running")
        ep = self.state.endpoint
        if ep.can_break_in:
            self.gdb.command("-exec-interrupt", timeout)
        elif self.state.interrupter is not None:
            self.state.interrupter()
        else:
            raise GdbError(
                f"cannot interrupt a running {ep.transport} target on {ep}",
                hint="kgdb needs SysRq-G in the target (echo g > /proc/sysrq-trigger)",
            )
        rec = self.gdb.wait_event(is_stopped, timeout)
        if rec is None:
            raise GdbTimeout(f"the target did not stop within {timeout:g} s of an interrupt")
        self.state.running = False
        if rec.klass == "stopped" and rec.payload.get("reason") == "breakpoint-hit":
            # A hit raced with our interrupt: leave it for wait_stop.
            self.gdb.router.events.appendleft(rec)
        return self.inspect.stop_from(rec, backtrace=False, limit=0)

    def wait_stop(self, timeout: float, *, backtrace: bool = True, limit: int = 32) -> Stop:
        """Wait up to ``timeout`` s for the target to stop; GdbTimeout if it does not."""
        rec = self.gdb.wait_event(is_stopped, timeout)
        if rec is None:
            raise GdbTimeout(f"the target did not stop within {timeout:g} s")
        self.state.running = False
        return self.inspect.stop_from(rec, backtrace=backtrace, limit=limit)

    @contextlib.contextmanager
    def stopped(self, timeout: float = 10.0) -> Iterator[None]:
        """A ``with`` block run with the target stopped; resumed after if it was running."""
        was_running = self.state.running
        if was_running:
            self.interrupt(timeout)
        try:
            yield
        finally:
            if was_running and self.gdb.alive and not self.state.closed:
                self.resume(timeout)

    # -- the guard ------------------------------------------------------------

    def set_guard_transport(self, transport: str) -> None:
        """Judge breakpoints as for ``transport`` (here and in gdb's ``kdbg-break``)."""
        self.state.guard_transport = transport
        if (GDB_DIR / "kdbg_guard.py").exists():
            self.gdb.console(f"kdbg-guard transport {transport}", 10.0)

    def check_guard(
        self, addr: int, *, force: bool = False, stack: Sequence[int] = ()
    ) -> Decision:
        """Ask the session's :class:`Guard` about ``addr`` on this transport; enforce its
        verdict (BreakpointRefused). A guard that cannot judge refuses, saying why."""
        decision = self.guard.judge(addr, transport=self.state.transport, stack=stack,
                                    force=force)
        self.guard.enforce(decision)
        return decision

    # -- breakpoints ----------------------------------------------------------

    def resolve(self, where: int | str) -> tuple[int, str]:
        """An address and a label for ``where``: an int, ``0xADDR``, ``SYM`` or ``SYM+0xOFF``."""
        if isinstance(where, int):
            sym, off, _ = self.inspect.symbolize(where)
            return where, f"{sym}+0x{off:x}" if sym else f"0x{where:x}"
        text = where.strip()
        kallsyms, vmlinux = self.state.kallsyms, self.state.vmlinux
        if kallsyms is not None:
            rng = kallsyms.resolve(text)
            return rng.start, rng.label
        if re.fullmatch(r"0x[0-9a-fA-F]+", text):
            return int(text, 16), text
        m = re.fullmatch(r"([A-Za-z_.$][\w.$]*)(?:\+(0x[0-9a-fA-F]+|\d+))?", text)
        if m is None or vmlinux is None:
            raise BadInput(
                f"cannot resolve {text!r} without the target's kallsyms or a vmlinux",
                hint="pass kallsyms=... or vmlinux=..., or give 0xADDR",
            )
        value = self.gdb.command(f"-data-evaluate-expression &{m[1]}").payload.get("value", "")
        addr = as_int(re.sub(r"^\(.*?\)\s*", "", str(value)))
        if addr is None:
            raise BadInput(f"gdb cannot find {m[1]} in {vmlinux}")
        return addr + (int(m[2], 0) if m[2] else 0), text

    def break_at(
        self,
        where: int | str,
        *,
        hw: bool = False,
        force: bool = False,
        stack: Sequence[int] = (),
        timeout: float = 10.0,
    ) -> Breakpoint:
        """Set a breakpoint at ``where`` (see :meth:`resolve`), after the safety guard agrees.

        A running target is interrupted, the breakpoint inserted and the target resumed,
        so the breakpoint is armed when this returns. ``force`` and ``stack`` go to the
        guard; BreakpointRefused propagates from it.
        """
        addr, label = self.resolve(where)
        decision = self.check_guard(addr, force=force, stack=stack)
        with self.stopped(timeout):
            flags = "-h " if hw else ""
            reply = self.gdb.command(f"-break-insert {flags}*0x{addr:x}", timeout)
            bkpt = reply.payload.get("bkpt", {})
            number = as_int(bkpt.get("number"))
            if number is None:
                raise GdbError(f"gdb set no breakpoint at 0x{addr:x}: {reply.record.raw}")
            bp = Breakpoint(number, addr, label, hw, decision)
            self.state.breakpoints[number] = bp
        return bp

    def break_drop_site(
        self,
        location: int,
        *,
        hw: bool = False,
        force: bool = False,
        stack: Sequence[int] = (),
        timeout: float = 10.0,
    ) -> tuple[DropSite, Breakpoint]:
        """Find the drop call before ``location`` (:meth:`drop_site`) and break on it."""
        with self.stopped(timeout):
            site = self.drop_site(location, timeout=timeout)
            bp = self.break_at(site.call_addr, hw=hw, force=force, stack=stack, timeout=timeout)
        return site, bp

    def delete(self, bp: Breakpoint | int, timeout: float = 10.0) -> None:
        """Delete one of our breakpoints (interrupting a running target to do so)."""
        number = bp.number if isinstance(bp, Breakpoint) else bp
        with self.stopped(timeout):
            self.gdb.command(f"-break-delete {number}", timeout)
        self.state.breakpoints.pop(number, None)

    def _drop_call(self, location: int, timeout: float) -> Instruction | None:
        """The direct call to a drop function ending at ``location`` (with the callee's
        name in its text, as gdb writes it), or None: then gdb disassembles."""
        try:
            code = self.inspect.read_memory(location - dropsite.CALL_REL32_LEN,
                                            dropsite.CALL_REL32_LEN, timeout)
        except GdbError:
            return None
        ins = dropsite.direct_call(code, location)
        if ins is None:
            return None
        target, _ = dropsite.call_target(ins.text)
        assert target is not None
        sym, off, _ = self.inspect.symbolize(target)
        kallsyms = self.state.kallsyms
        known = dropsite.drop_functions(kallsyms.names()) if kallsyms is not None else ()
        if sym is None or off != 0 or sym not in (known or dropsite.DROP_FUNCTIONS):
            return None
        return Instruction(ins.address, ins.length, f"{ins.text} <{sym}>")

    def drop_site(self, location: int, timeout: float = 10.0) -> DropSite:
        """The call instruction just before return address ``location``, checked to call a
        drop function (:data:`dropsite.DROP_FUNCTIONS`); NotADropSite otherwise."""
        inspect = self.inspect
        with self.stopped(timeout):
            sym, off, _ = inspect.symbolize(location)
            label = f"{sym}+0x{off:x}" if sym else f"0x{location:x}"
            # A direct call to a drop function is read as 5 bytes (one small read); any
            # other call is found by gdb's disassembly (slow on a module gdb has not
            # looked into yet: 0.09 s under TCG).
            ins = self._drop_call(location, timeout)
            if ins is None:
                ins = inspect.call_before(location, timeout=timeout)
            if ins is None:
                raise NotADropSite(
                    f"{label}: the instruction before it is not a call",
                    hint="is this a drop location (the tracer's return address)?",
                )
            target, gdb_sym = dropsite.call_target(ins.text)
            callee: str | None = gdb_sym
            if target is not None:
                csym, coff, _ = inspect.symbolize(target)
                callee = csym if csym is not None and coff == 0 else callee
            kallsyms = self.state.kallsyms
            names = kallsyms.names() if kallsyms is not None else None
            callee = dropsite.check_callee(callee, label, ins, names)
            csym, coff, _ = inspect.symbolize(ins.address)
            return DropSite(
                location=location,
                call_addr=ins.address,
                call_len=ins.length,
                callee=callee,
                caller=f"{csym}+0x{coff:x}" if csym else f"0x{ins.address:x}",
                instruction=ins.text,
            )
