"""Starting gdb and attaching it to the target: symbols and helpers loaded, the stub
reached (a KGDBoE or kgdboc target that runs with no debugger is broken into)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

from kdbg.debugger import breakin, reach
from kdbg.debugger.cleanup import LIVE, Cleanup
from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.errors import GdbDied, TargetUnreachable
from kdbg.debugger.gdbproc import DEFAULT_GDB, GdbProcess
from kdbg.debugger.mi import Record
from kdbg.debugger.state import is_stopped
from kdbg.debugger.vmlinux import inspect as inspect_vmlinux
from kdbg.debugger.watchdog import Watchdog
from kdbg.dirs import GDB_DIR
from kdbg.errors import GdbError, GdbTimeout, KdbgError
from kdbg.guard.judge import Guard
from kdbg.symbols.evidence import TargetSymbols
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.transports import Wake

# A refused connect fails at once, an unanswered one within 3 s (gdb's defaults: 15 s
# of retries).
FAST_CONNECT = ("set tcp auto-retry off", "set tcp connect-timeout 3")


class Connection(Cleanup):
    """A session's start: gdb up, symbols and helpers loaded, attached."""

    @classmethod
    def connect(
        cls,
        endpoint: str | Endpoint,
        *,
        vmlinux: str | Path | None = None,
        kallsyms: Kallsyms | str | Path | None = None,
        kallsyms_file: Path | None = None,
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
    ) -> Self:
        """Start gdb (``--nx``, MI3), load symbols and helpers, and attach to ``endpoint``.

        ``kallsyms`` is the *target's* kallsyms (a :class:`Kallsyms`, or a path to a copy
        of its ``/proc/kallsyms``): it names frames and, with ``vmlinux``, gives the KASLR
        offset (runtime ``_text`` minus the file's) unless ``kaslr_offset`` is given; a
        table comes with ``kallsyms_file``, the copy it was read from, for gdb's helpers.
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
        ksyms, ksyms_file, tmpfile = load_kallsyms(kallsyms)
        ksyms_file = ksyms_file or kallsyms_file
        vm = Path(vmlinux) if vmlinux is not None else None
        has_dwarf, offset = vmlinux_facts(vm, ksyms, kaslr_offset)
        setup = [f"set remotetimeout {remotetimeout}", *FAST_CONNECT]
        if ep.transport.baud and ep.device is not None:
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
            guard=guard or default_guard(target_symbols, ksyms, vm, offset, ep),
            gdb_path=gdb,
            gdb_prefix=tuple(gdb_prefix),
            remotetimeout=remotetimeout,
            loud=loud,
        )
        LIVE.add(session)
        session._tmpfile = tmpfile
        proc.router._on_async = session._on_async
        try:
            if watchdog:
                session._watchdog = Watchdog(ep, proc.pid, gdb=gdb, prefix=gdb_prefix)
            if ep.transport.wake is Wake.PROBE:
                session._probe = breakin.Probe(ep, gdb_prefix)
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
                hint=self.endpoint.transport.attach_hint,
            ) from err
        except GdbDied:
            raise
        except GdbError as err:
            raise TargetUnreachable(f"cannot attach to {self.endpoint}: {err}",
                                    hint=self.endpoint.transport.attach_hint) from err
        self.running = False
        # The attach stop is reported as *stopped; drop it so wait_stop sees only new stops.
        self.gdb.poll(0.05)
        while self.gdb.router.pop_event(is_stopped) is not None:
            pass

    def _target_select(self, timeout: float) -> None:
        """``target remote``. kgdb answers only a stopped kernel. A KGDBoE target has
        been probed meanwhile (:class:`breakin.Probe`: stopped with the break-in byte
        if it ran with a dead debugger); a kgdboc target that stays silent for
        :data:`breakin.ANSWER_WITHIN` s is stopped with SysRq-G through the session's
        interrupter and the same attach goes on. ``attach_note`` says what was done."""
        probed = self._probe.result() if self._probe is not None else None
        if probed == "broke-in":
            self.attach_note = breakin.BROKE_IN
        command = f"-target-select remote {self.endpoint.gdb_target}"
        token = self.gdb.send(command)
        # without the probe's word a KGDBoE target gets the byte the way kgdboc gets SysRq-G
        wake = self.endpoint.transport.wake
        can_wake = (wake is Wake.PROBE and probed is None) or (
            wake is Wake.SYSRQ_G and self.interrupter is not None)
        if can_wake and timeout > breakin.ANSWER_WITHIN:
            try:
                self.gdb.reply(token, command, breakin.ANSWER_WITHIN, keep=True)
                return
            except GdbTimeout:
                if wake is Wake.PROBE:
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


def vmlinux_facts(vmlinux: Path | None, kallsyms: Kallsyms | None,
                  kaslr_offset: int | None) -> tuple[bool, int]:
    """(whether ``vmlinux`` has DWARF, the KASLR offset): the given one, else runtime
    ``_text`` (from ``kallsyms``) minus the file's."""
    if vmlinux is None:
        return False, kaslr_offset or 0
    info = inspect_vmlinux(vmlinux)
    offset = kaslr_offset or 0
    if kaslr_offset is None and kallsyms is not None:
        with contextlib.suppress(KdbgError):
            offset = kallsyms.symbol("_text").address - info.text
    return info.has_dwarf, offset


def load_kallsyms(
    kallsyms: Kallsyms | str | Path | None,
) -> tuple[Kallsyms | None, Path | None, Path | None]:
    """(table, a file gdb's helper can read, a temp file to delete) for ``kallsyms``."""
    if kallsyms is None:
        return None, None, None
    if isinstance(kallsyms, Kallsyms):
        return kallsyms, None, None
    path = Path(kallsyms)
    return Kallsyms.load(path), path, None


def default_guard(
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
