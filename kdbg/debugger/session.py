"""A debug session: one gdb, one target kernel, and the promise to leave it clean.

Typical use (what ``kdbg watch --break`` does)::

    with Session.connect("tcp:127.0.0.1:1234", kallsyms=ksyms) as s:
        s.resume()                          # the target runs while the tracer watches
        site, bp = s.break_drop_site(event.location)   # interrupts, arms, resumes
        stop = s.wait_stop(timeout=60)      # Stop with a trusted, symbolized backtrace
        print(stop.backtrace)
    # leaving the block: our breakpoints deleted, target resumed, gdb detached

:meth:`Session.close` runs on normal exit, on exceptions, on SIGINT (KeyboardInterrupt)
and on SIGTERM (turned into :class:`SessionInterrupted` while a session is open). If gdb
itself dies, ``close`` starts a fresh gdb, reconnects and detaches, which makes the stub
(QEMU or kgdb) drop every breakpoint and resume. Whatever it cannot do, it reports in a
:class:`CleanupReport` and, by default, loudly on stderr, naming the target's state.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from kdbg.debugger import breakin, dropsite, reach
from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.errors import GdbDied, NotADropSite, SessionInterrupted, TargetUnreachable
from kdbg.debugger.gdbproc import DEFAULT_GDB, GdbProcess
from kdbg.debugger.mi import Record, as_int
from kdbg.debugger.model import (
    Breakpoint,
    CleanupReport,
    DropSite,
    Frame,
    Instruction,
    ModuleDebug,
    Stop,
)
from kdbg.debugger.vmlinux import inspect as inspect_vmlinux
from kdbg.debugger.watchdog import Watchdog, release
from kdbg.errors import BadInput, GdbError, GdbTimeout, KdbgError
from kdbg.guard.decision import Decision
from kdbg.guard.judge import Guard
from kdbg.paths import GDB_DIR
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.symbols.sources import source_roots, tree_relative
from kdbg.symbols.target import TargetSymbols

log = logging.getLogger("kdbg.debugger")

DONE_MARKER = "@@kdbg-done@@"
# A refused connect fails at once, an unanswered one within 3 s (gdb's defaults: 15 s
# of retries).
FAST_CONNECT = ("set tcp auto-retry off", "set tcp connect-timeout 3")
CLOSE_BUDGET = 1.5  # s: interrupt, delete, detach through the session's gdb
RECOVER_BUDGET = 3.0  # s: a fresh gdb's attach and detach, when that failed
ARG_REGISTERS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
_LIVE: weakref.WeakSet[Session] = weakref.WeakSet()
_WINDOW = 64  # bytes disassembled before a return address before falling back to the start


class Session:
    """gdb attached to one target kernel. Build with :meth:`connect`; use as a context manager.

    After :meth:`connect` the target is *stopped* (QEMU's stub and kgdb both stop it on
    attach). Every method waits at most its ``timeout``.
    """

    def __init__(
        self,
        gdb: GdbProcess,
        endpoint: Endpoint,
        *,
        kallsyms: Kallsyms | None,
        kallsyms_file: Path | None,
        vmlinux: Path | None,
        has_dwarf: bool,
        kaslr_offset: int,
        interrupter: Callable[[], None] | None,
        guard: Guard,
        gdb_path: str,
        gdb_prefix: tuple[str, ...],
        remotetimeout: int,
        loud: bool,
    ) -> None:
        self.gdb = gdb
        self.endpoint = endpoint
        self.kallsyms = kallsyms
        self.kallsyms_file = kallsyms_file
        self.vmlinux = vmlinux
        self.guard_transport: str | None = None
        self.has_dwarf = has_dwarf
        self.kaslr_offset = kaslr_offset
        self.interrupter = interrupter
        self.guard = guard
        self.breakpoints: dict[int, Breakpoint] = {}
        self.running = False
        self.closed = False
        self.last_report: CleanupReport | None = None
        self._gdb_path = gdb_path
        self._gdb_prefix = gdb_prefix
        self._remotetimeout = remotetimeout
        self._loud = loud
        self._regnums: dict[str, int] | None = None
        self._sym_cache: dict[int, tuple[str | None, int, str | None]] = {}
        self._old_sigterm: Any = None
        self._tmpfile: Path | None = None
        self._attached = False
        self._detaching = False
        self._watchdog: Watchdog | None = None
        self.lost: str | None = None  # why the target is gone, once gdb has said so
        self.attach_note: str | None = None  # what attaching took (a break-in), for the user
        _LIVE.add(self)

    # -- connecting -----------------------------------------------------------

    @classmethod
    def connect(
        cls,
        endpoint: str | Endpoint,
        *,
        vmlinux: str | Path | None = None,
        kallsyms: Kallsyms | str | Path | None = None,
        kaslr_offset: int | None = None,
        timeout: float = 30.0,
        remotetimeout: int = 10,
        interrupter: Callable[[], None] | None = None,
        target_symbols: TargetSymbols | None = None,
        guard: Guard | None = None,
        gdb: str = DEFAULT_GDB,
        gdb_prefix: Sequence[str] = (),
        handle_sigterm: bool = True,
        loud: bool = True,
        watchdog: bool = True,
    ) -> Session:
        """Start gdb (``--nx``, MI3), load symbols and helpers, and attach to ``endpoint``.

        ``kallsyms`` is the *target's* kallsyms (a :class:`Kallsyms`, or a path to a copy
        of its ``/proc/kallsyms``): it names frames and, with ``vmlinux``, gives the KASLR
        offset (runtime ``_text`` minus the file's) unless ``kaslr_offset`` is given.
        ``interrupter`` stops a running kgdboc target (SysRq-G in the guest); QEMU's stub
        and KGDBoE are interrupted with Ctrl-C. ``guard`` judges every breakpoint; by
        default it is built on ``target_symbols`` (what is known about the target), else
        on ``kallsyms``, and with neither it refuses every breakpoint (it fails closed).
        ``gdb_prefix`` runs gdb under a command (``ip netns exec NS`` for a KGDBoE lab).

        An endpoint with nothing behind it raises :class:`TargetUnreachable` before gdb
        starts (:mod:`kdbg.debugger.reach`). gdb dies with kdbg; unless ``watchdog`` is
        False, a :class:`Watchdog` process releases the target if kdbg is killed before
        it could close the session.
        """
        ep = endpoint if isinstance(endpoint, Endpoint) else Endpoint.parse(endpoint)
        if not gdb_prefix:  # under a prefix (another netns) this host's sockets tell nothing
            reach.check(ep)
        ksyms, ksyms_file, tmpfile = _load_kallsyms(kallsyms)
        vm = Path(vmlinux) if vmlinux is not None else None
        has_dwarf = False
        offset = kaslr_offset or 0
        if vm is not None:
            info = inspect_vmlinux(vm)
            has_dwarf = info.has_dwarf
            if kaslr_offset is None and ksyms is not None:
                with contextlib.suppress(KdbgError):
                    offset = ksyms.symbol("_text").address - info.text
        setup = [f"set remotetimeout {remotetimeout}", *FAST_CONNECT]
        if ep.kind == "serial" and ep.device is not None:
            setup.append(f"set serial baud {ep.baud}")
        proc = GdbProcess(gdb, setup=setup, start_timeout=min(timeout, 30.0), prefix=gdb_prefix)
        session = cls(
            proc,
            ep,
            kallsyms=ksyms,
            kallsyms_file=ksyms_file,
            vmlinux=vm,
            has_dwarf=has_dwarf,
            kaslr_offset=offset,
            interrupter=interrupter,
            guard=guard or _default_guard(target_symbols, ksyms, vm, offset, ep),
            gdb_path=gdb,
            gdb_prefix=tuple(gdb_prefix),
            remotetimeout=remotetimeout,
            loud=loud,
        )
        session._tmpfile = tmpfile
        proc.router._on_async = session._on_async
        try:
            if watchdog:
                session._watchdog = Watchdog(ep, proc.pid, gdb=gdb, prefix=gdb_prefix)
            session._setup(timeout)
            session._attach(timeout)
        except BaseException as err:
            # what was done goes with the error (a break-watch reports it as its cleanup)
            err.kdbg_cleanup = session._abandon()  # type: ignore[attr-defined]
            raise
        if handle_sigterm:
            session._install_sigterm()
        return session

    def _setup(self, timeout: float) -> None:
        g = self.gdb
        # symbol-file does not set gdb's architecture (only an exec file does), and
        # kgdb, unlike QEMU's stub, sends no target description: without this, gdb
        # talks to a kgdboc/KGDBoE target as i386 and has no rip.
        g.console("set architecture i386:x86-64", timeout)
        if self.vmlinux is not None:
            cmd = f"symbol-file -o 0x{self.kaslr_offset:x} {self.vmlinux}"
            if self.kaslr_offset == 0:
                cmd = f"symbol-file {self.vmlinux}"
            g.console(cmd, timeout=max(timeout, 120.0))
        for helper in ("kdbg_kallsyms.py", "kdbg_session.py", "kdbg_guard.py"):
            path = GDB_DIR / helper
            if path.exists():
                g.console(f"source {path}", timeout)
        session_script = GDB_DIR / "kdbg_session.gdb"
        if session_script.exists():
            g.console(f"source {session_script}", timeout)
        if self.kallsyms_file is not None and (GDB_DIR / "kdbg_kallsyms.py").exists():
            g.console(f"kdbg-kallsyms {self.kallsyms_file}", timeout)
        if (GDB_DIR / "kdbg_guard.py").exists():
            # gdb's own kdbg-break asks the same guard, about the same target.
            g.console(f"kdbg-guard transport {self.transport}", timeout)
            if self.kallsyms_file is not None:
                g.console(f"kdbg-guard kallsyms {self.kallsyms_file}", timeout)
            if self.vmlinux is not None:
                g.console(f"kdbg-guard vmlinux {self.vmlinux} 0x{self.kaslr_offset or 0:x}",
                          timeout)

    def _attach(self, timeout: float) -> None:
        self._attached = True  # from here on, a failure must detach (or release)
        try:
            self._target_select(timeout)
        except GdbTimeout as err:
            raise TargetUnreachable(
                f"no answer from a gdb stub at {self.endpoint} within {timeout:g} s",
                hint=_connect_hint(self.endpoint),
            ) from err
        except GdbDied:
            raise
        except GdbError as err:
            raise TargetUnreachable(
                f"cannot attach to {self.endpoint}: {err}", hint=_connect_hint(self.endpoint)
            ) from err
        self.running = False
        # The attach stop is reported as *stopped; drop it so wait_stop sees only new stops.
        self.gdb.poll(0.05)
        while self.gdb.router.pop_event(_is_stopped) is not None:
            pass

    def _target_select(self, timeout: float) -> None:
        """``target remote``. kgdb answers only a stopped kernel: when a KGDBoE or kgdboc
        target stays silent for :data:`breakin.ANSWER_WITHIN` s (it runs, and a debugger
        may have died), stop it (the break-in byte over UDP; SysRq-G through the
        session's interrupter for kgdboc) and let the same attach go on; ``attach_note``
        says so."""
        command = f"-target-select remote {self.endpoint.gdb_target}"
        token = self.gdb.send(command)
        can_wake = self.endpoint.kind == "udp" or (
            self.endpoint.kind == "serial" and self.interrupter is not None)
        if can_wake and timeout > breakin.ANSWER_WITHIN:
            try:
                self.gdb.reply(token, command, breakin.ANSWER_WITHIN, keep=True)
                return
            except GdbTimeout:
                if self.endpoint.kind == "udp":
                    breakin.nudge(self.endpoint, self._gdb_prefix)
                    self.attach_note = breakin.BROKE_IN
                else:
                    assert self.interrupter is not None
                    self.interrupter()
                    self.attach_note = breakin.SYSRQ_G
                timeout -= breakin.ANSWER_WITHIN
        self.gdb.reply(token, command, timeout)

    def _on_async(self, rec: Record) -> None:
        if rec.kind == "exec" and rec.klass == "running":
            self.running = True
        elif rec.kind == "exec" and rec.klass == "stopped":
            self.running = False
        elif (rec.kind == "notify" and rec.klass == "thread-group-exited"
              and self._attached and not self._detaching):
            # gdb lost the remote connection (the lab's QEMU died, the link broke)
            self.lost = f"gdb lost its connection to {self.endpoint}"
            self.running = False

    def set_guard_transport(self, transport: str) -> None:
        """Judge breakpoints as for ``transport`` (here and in gdb's ``kdbg-break``)."""
        self.guard_transport = transport
        if (GDB_DIR / "kdbg_guard.py").exists():
            self.gdb.console(f"kdbg-guard transport {transport}", 10.0)

    @property
    def transport(self) -> str:
        """The guard's name for this session's transport: gdbstub, kgdboc or kgdboe.

        ``guard_transport``, when set, overrides what the endpoint implies: the guard
        then judges breakpoints as if the session ran over that transport (to rehearse
        a KGDBoE session on a lab's QEMU stub, say).
        """
        return self.guard_transport or self.endpoint.transport

    # -- breakpoints ----------------------------------------------------------

    def resolve(self, where: int | str) -> tuple[int, str]:
        """An address and a label for ``where``: an int, ``0xADDR``, ``SYM`` or ``SYM+0xOFF``."""
        if isinstance(where, int):
            sym, off, _ = self.symbolize(where)
            return where, f"{sym}+0x{off:x}" if sym else f"0x{where:x}"
        text = where.strip()
        if self.kallsyms is not None:
            rng = self.kallsyms.resolve(text)
            return rng.start, rng.label
        if re.fullmatch(r"0x[0-9a-fA-F]+", text):
            return int(text, 16), text
        m = re.fullmatch(r"([A-Za-z_.$][\w.$]*)(?:\+(0x[0-9a-fA-F]+|\d+))?", text)
        if m is None or self.vmlinux is None:
            raise BadInput(
                f"cannot resolve {text!r} without the target's kallsyms or a vmlinux",
                hint="pass kallsyms=... or vmlinux=..., or give 0xADDR",
            )
        value = self.gdb.command(f"-data-evaluate-expression &{m[1]}").payload.get("value", "")
        addr = as_int(re.sub(r"^\(.*?\)\s*", "", str(value)))
        if addr is None:
            raise BadInput(f"gdb cannot find {m[1]} in {self.vmlinux}")
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
        with self._stopped(timeout):
            flags = "-h " if hw else ""
            reply = self.gdb.command(f"-break-insert {flags}*0x{addr:x}", timeout)
            bkpt = reply.payload.get("bkpt", {})
            number = as_int(bkpt.get("number"))
            if number is None:
                raise GdbError(f"gdb set no breakpoint at 0x{addr:x}: {reply.record.raw}")
            bp = Breakpoint(number, addr, label, hw, decision)
            self.breakpoints[number] = bp
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
        with self._stopped(timeout):
            site = self.drop_site(location, timeout=timeout)
            bp = self.break_at(site.call_addr, hw=hw, force=force, stack=stack, timeout=timeout)
        return site, bp

    def delete(self, bp: Breakpoint | int, timeout: float = 10.0) -> None:
        """Delete one of our breakpoints (interrupting a running target to do so)."""
        number = bp.number if isinstance(bp, Breakpoint) else bp
        with self._stopped(timeout):
            self.gdb.command(f"-break-delete {number}", timeout)
        self.breakpoints.pop(number, None)

    def check_guard(
        self, addr: int, *, force: bool = False, stack: Sequence[int] = ()
    ) -> Decision:
        """Ask the session's :class:`Guard` about ``addr`` on this transport; enforce its
        verdict (BreakpointRefused). A guard that cannot judge refuses, saying why."""
        decision = self.guard.judge(addr, transport=self.transport, stack=stack, force=force)
        self.guard.enforce(decision)
        return decision

    # -- the drop site --------------------------------------------------------

    def drop_site(self, location: int, timeout: float = 10.0) -> DropSite:
        """The call instruction just before return address ``location``, checked to call a
        drop function (:data:`dropsite.DROP_FUNCTIONS`); NotADropSite otherwise."""
        with self._stopped(timeout):
            sym, off, _ = self.symbolize(location)
            label = f"{sym}+0x{off:x}" if sym else f"0x{location:x}"
            ins = self.call_before(location, timeout=timeout)
            if ins is None:
                raise NotADropSite(
                    f"{label}: the instruction before it is not a call",
                    hint="is this a drop location (the tracer's return address)?",
                )
            target, gdb_sym = dropsite.call_target(ins.text)
            callee: str | None = gdb_sym
            if target is not None:
                csym, coff, _ = self.symbolize(target)
                callee = csym if csym is not None and coff == 0 else callee
            names = self.kallsyms.names() if self.kallsyms is not None else None
            callee = dropsite.check_callee(callee, label, ins, names)
            csym, coff, _ = self.symbolize(ins.address)
            return DropSite(
                location=location,
                call_addr=ins.address,
                call_len=ins.length,
                callee=callee,
                caller=f"{csym}+0x{coff:x}" if csym else f"0x{ins.address:x}",
                instruction=ins.text,
            )

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

    # -- running and stopping -------------------------------------------------

    def resume(self, timeout: float = 10.0) -> None:
        """Continue the target (no-op if it runs). Breakpoints are armed when this returns."""
        if self.running:
            return
        self.gdb.command("-exec-continue", timeout)
        self.running = True

    def interrupt(self, timeout: float = 10.0) -> Stop:
        """Stop a running target the way its transport allows, and report where it is."""
        self.gdb.poll(0)
        if not self.running:
            raise GdbError("the target is not running")
        if self.endpoint.can_break_in:
            self.gdb.command("-exec-interrupt", timeout)
        elif self.interrupter is not None:
            self.interrupter()
        else:
            raise GdbError(
                f"cannot interrupt a running kgdboc target on {self.endpoint}",
                hint="kgdb needs SysRq-G in the target (echo g > /proc/sysrq-trigger)",
            )
        rec = self.gdb.wait_event(_is_stopped, timeout)
        if rec is None:
            raise GdbTimeout(f"the target did not stop within {timeout:g} s of an interrupt")
        self.running = False
        if rec.klass == "stopped" and rec.payload.get("reason") == "breakpoint-hit":
            # A hit raced with our interrupt: leave it for wait_stop.
            self.gdb.router.events.appendleft(rec)
        return self._stop_from(rec, backtrace=False, limit=0)

    def wait_stop(self, timeout: float, *, backtrace: bool = True, limit: int = 32) -> Stop:
        """Wait up to ``timeout`` s for the target to stop; GdbTimeout if it does not."""
        rec = self.gdb.wait_event(_is_stopped, timeout)
        if rec is None:
            raise GdbTimeout(f"the target did not stop within {timeout:g} s")
        self.running = False
        return self._stop_from(rec, backtrace=backtrace, limit=limit)

    def _stop_from(self, rec: Record, *, backtrace: bool, limit: int) -> Stop:
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
            file=tree_relative(frame.get("file"), source_roots(self.vmlinux)),
            line=as_int(frame.get("line")),
        )

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

    # -- inspecting a stopped target ------------------------------------------

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
        frames: list[Frame] = []
        for item in raw:
            f = item.get("frame", item) if isinstance(item, dict) else {}
            addr = as_int(f.get("addr"))
            level = as_int(f.get("level"))
            if addr is None or level is None:
                break
            sym, off, mod = self.symbolize(addr)
            in_text = sym is not None or (f.get("func") not in (None, "??"))
            if not in_text:
                return frames, f"frame {level} (0x{addr:x}) is not in kernel text"
            if self.has_dwarf:
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
                    file=tree_relative(f.get("file"), source_roots(self.vmlinux))
                    if self.has_dwarf else None,
                    line=as_int(f.get("line")) if self.has_dwarf else None,
                    module=mod,
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

    def symbolize(self, addr: int) -> tuple[str | None, int, str | None]:
        """(symbol, offset, module) for ``addr`` from kallsyms, else from gdb's symbols."""
        if self.kallsyms is not None:
            loc = self.kallsyms.lookup(addr)
            return loc.symbol, loc.offset, loc.module
        if addr in self._sym_cache:
            return self._sym_cache[addr]
        result: tuple[str | None, int, str | None] = (None, 0, None)
        if self.vmlinux is not None and self.gdb.alive:
            with contextlib.suppress(GdbError):
                text = self.gdb.console(f"info symbol 0x{addr:x}", 10.0)
                m = re.match(r"(\S+)(?: \+ (\d+))? in section", text)
                if m:
                    result = (m[1], int(m[2] or 0), None)
        self._sym_cache[addr] = result
        return result

    # -- interactive ----------------------------------------------------------

    def interactive(self, banner: str | None = None) -> CleanupReport:
        """Give the user gdb's prompt on this target (stopped), then clean up.

        The prompt is the same gdb, so breakpoints, symbols and the kdbg helpers
        (``kdbg-kallsyms``, ``kdbg-break``...) are there. ``kdbg-done``, ``quit`` or Ctrl-]
        ends it; then kdbg deletes the breakpoints, resumes the target and detaches.
        """
        if self.running:
            self.interrupt()
        text = banner or ""
        text += (
            f"kdbg: gdb on {self.endpoint} ({self.transport}); the target is stopped.\n"
            "kdbg: type 'kdbg-done' or 'quit' (or press Ctrl-]) to resume the target and "
            "return; every breakpoint is deleted then.\n"
        )
        why = self.gdb.interact(text, done_marker=DONE_MARKER.encode())
        log.debug("interactive session ended: %s", why)
        # The user's own breakpoints are deleted too: they live in this session's gdb.
        with contextlib.suppress(GdbError):
            if self.gdb.alive:
                self._refresh_breakpoints()
        return self.close()

    def _refresh_breakpoints(self) -> None:
        reply = self.gdb.command("-break-list", 10.0)
        table = reply.payload.get("BreakpointTable", {})
        for item in table.get("body", []):
            b = item.get("bkpt", item) if isinstance(item, dict) else {}
            num = as_int(b.get("number"))
            addr = as_int(b.get("addr")) or 0
            if num is not None and num not in self.breakpoints:
                self.breakpoints[num] = Breakpoint(num, addr, "user", "hw" in str(b.get("type")))

    # -- ending ---------------------------------------------------------------

    def detach(self, timeout: float = 10.0) -> None:
        """Detach from a stopped target; the stub resumes it."""
        self._detaching = True
        self.gdb.command("-target-detach", timeout)
        self.running = True

    def close(self, timeout: float = CLOSE_BUDGET) -> CleanupReport:
        """Delete our breakpoints, resume the target, detach and stop gdb. Idempotent.

        Through this session's gdb it takes at most ``timeout`` s; if that fails (gdb died,
        the target does not answer), a fresh gdb attaches and detaches within
        :data:`RECOVER_BUDGET` s more, and a target that is gone is said to be gone at
        once. Ctrl-C and SIGTERM wait until this is done. Never raises for cleanup
        failures: returns a :class:`CleanupReport` (and writes it to stderr when the
        session is ``loud`` and something could not be done).
        """
        if self.closed and self.last_report is not None:
            return self.last_report
        self.closed = True
        self.gdb.cancel = lambda: False  # the clean-up itself is never abandoned
        report = CleanupReport()
        with _signals_deferred():
            try:
                self._cleanup(report, time.monotonic() + timeout)
            finally:
                self.gdb.kill()
                self._restore_sigterm()
                self._disarm()
                if self._tmpfile is not None:
                    with contextlib.suppress(OSError):
                        self._tmpfile.unlink()
        self.last_report = report
        if not report.ok and self._loud:
            sys.stderr.write(f"kdbg: WARNING: {report.message()}\n")
            sys.stderr.flush()
        return report

    def _cleanup(self, report: CleanupReport, deadline: float) -> None:
        def left() -> float:
            return max(deadline - time.monotonic(), 0.1)

        if self.gdb.alive:
            try:
                if self.running:
                    self.interrupt(left())
                    report.steps.append("interrupted the target")
                for num in sorted(self.breakpoints):
                    self.gdb.command(f"-break-delete {num}", left())
                    report.steps.append(f"deleted breakpoint {num}")
                self.breakpoints.clear()
                self.detach(left())
                report.steps.append("detached (the target resumed)")
                # detached: gdb has nothing left to do, and exiting by itself with a big
                # vmlinux loaded takes longer than being killed
                return
            except (GdbError, OSError) as err:
                report.steps.append(f"gdb failed during cleanup: {err}")
                log.debug("cleanup through gdb failed: %s", err)
        else:
            report.steps.append(f"gdb was gone: {self.gdb.dead_reason}")
        self.gdb.kill()
        self._recover(report, RECOVER_BUDGET)

    def _recover(self, report: CleanupReport, timeout: float) -> None:
        """With the session's gdb dead, attach a fresh gdb and detach: the stub then drops
        every breakpoint and resumes. Reports the target's state when even this fails,
        and says so at once when nothing is behind the endpoint any more."""
        bps = ", ".join(f"0x{b.address:x}" for b in self.breakpoints.values())
        if self.endpoint.kind == "serial" and self.running and self.interrupter is not None:
            with contextlib.suppress(KdbgError, OSError):
                self.interrupter()  # kgdb answers a fresh gdb only once stopped
        result = release(self.endpoint, gdb=self._gdb_path, prefix=self._gdb_prefix,
                         timeout=timeout)
        if result.ok:
            self.breakpoints.clear()
            self.running = True
            report.steps.append(result.detail)
            return
        report.ok = False
        report.problems.append(result.detail)
        if result.gone:
            report.target_state = f"gone ({self.endpoint} has nothing behind it)"
            return
        state = "running" if self.running else "STOPPED (halted in the debugger)"
        report.target_state = (
            f"{state} on {self.endpoint}, with kdbg's breakpoints possibly still set"
            + (f" at {bps}" if bps else "")
            + "; attach gdb and detach to release it"
        )

    def _abandon(self) -> CleanupReport:
        """A connect that failed half-way: detach if attached, else just stop gdb."""
        self.closed = True
        report = CleanupReport(target_state="running, untouched (gdb had not attached)")
        with _signals_deferred():
            try:
                if self._attached:
                    report.target_state = "running, no kdbg breakpoints"
                    try:
                        self.detach(0.5)
                        report.steps.append("detached (the target resumed)")
                    except (GdbError, OSError):
                        self.gdb.kill()
                        self._recover(report, RECOVER_BUDGET)
            finally:
                self.gdb.kill()
                self._disarm()
                if self._tmpfile is not None:
                    with contextlib.suppress(OSError):
                        self._tmpfile.unlink()
        self.last_report = report
        return report

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.disarm()
            self._watchdog = None

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the target's symbols, as its modules change --------------------------

    def stopped(self, timeout: float = 10.0) -> contextlib.AbstractContextManager[None]:
        """A ``with`` block run with the target stopped; resumed after if it was running."""
        return self._stopped(timeout)

    def use_kallsyms(self, table: Kallsyms, path: Path, timeout: float = 30.0) -> None:
        """Name addresses from ``table`` (the copy of the target's kallsyms at ``path``)
        from now on: here, in gdb's frame namer and in the guard."""
        self.kallsyms = table
        self.kallsyms_file = path
        self._sym_cache.clear()
        self.guard.use_kallsyms(table)
        if (GDB_DIR / "kdbg_kallsyms.py").exists():
            self.gdb.console(f"kdbg-kallsyms {path}", timeout)
        if (GDB_DIR / "kdbg_guard.py").exists():
            self.gdb.console(f"kdbg-guard kallsyms {path}", timeout)

    # -- helpers --------------------------------------------------------------

    @contextlib.contextmanager
    def _stopped(self, timeout: float) -> Iterator[None]:
        """Run the block with the target stopped; resume afterwards if it was running."""
        was_running = self.running
        if was_running:
            self.interrupt(timeout)
        try:
            yield
        finally:
            if was_running and self.gdb.alive and not self.closed:
                self.resume(timeout)

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise SessionInterrupted("terminated by SIGTERM; cleaning up the debug session")

        self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


def _is_stopped(rec: Record) -> bool:
    return rec.kind == "exec" and rec.klass == "stopped"


def _load_kallsyms(
    kallsyms: Kallsyms | str | Path | None,
) -> tuple[Kallsyms | None, Path | None, Path | None]:
    """(table, a file gdb's helper can read, a temp file to delete) for ``kallsyms``."""
    if kallsyms is None:
        return None, None, None
    if isinstance(kallsyms, Kallsyms):
        return kallsyms, None, None
    path = Path(kallsyms)
    return Kallsyms.load(path), path, None


def _default_guard(
    target_symbols: TargetSymbols | None,
    kallsyms: Kallsyms | None,
    vmlinux: Path | None,
    kaslr_offset: int,
    ep: Endpoint,
) -> Guard:
    """The session's guard from what connect() was given: the target's symbols, else
    its kallsyms (with the vmlinux for DWARF); with neither, a guard that refuses."""
    if target_symbols is not None:
        return Guard(target_symbols)
    if kallsyms is None:
        return Guard(None, missing="the debugger was given no kallsyms of the target")
    ksyms = kallsyms

    def build() -> TargetSymbols:
        return TargetSymbols(
            kallsyms=ksyms,
            vmlinux=vmlinux,
            kaslr_offset=kaslr_offset,
            name=str(ep),
            missing={"btf": "not read by the debugger",
                     "blocklist": "not read by the debugger"},
        )

    return Guard(build)


def _connect_hint(ep: Endpoint) -> str:
    if ep.kind in ("tcp", "unix"):
        return "is QEMU running with its gdb stub on (kdbg lab status)?"
    if ep.kind == "serial":
        return "kgdb answers only once stopped: echo g > /proc/sysrq-trigger in the target"
    return "is kgdboe loaded in the target, and is the UDP port reachable?"


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM off while cleanup runs (a second signal must not leave a
    mess); cleanup is bounded, and the command ends right after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def note(sig: int, frame: FrameType | None) -> None:
        log.warning("cleaning up; please wait")

    old = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _close_all() -> None:
    for session in list(_LIVE):
        if not session.closed:
            session.close()


atexit.register(_close_all)
