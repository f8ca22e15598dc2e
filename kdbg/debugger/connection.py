"""Attaching the session's gdb to the target: symbols and helpers loaded, the stub
reached (a KGDBoE or kgdboc target that runs with no debugger is broken into); and
what :meth:`kdbg.debugger.Session.connect` needs before gdb starts (its set-up
commands, the kallsyms table, the vmlinux's facts, the default guard)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from kdbg.debugger import breakin
from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.errors import GdbDied, TargetUnreachable
from kdbg.debugger.gdbproc import GdbProcess
from kdbg.debugger.state import SessionState, is_stopped
from kdbg.debugger.vmlinux import inspect as inspect_vmlinux
from kdbg.dirs import GDB_DIR
from kdbg.errors import GdbError, GdbTimeout, KdbgError
from kdbg.guard.judge import Guard
from kdbg.symbols.evidence import TargetSymbols
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.transports import Wake

# A refused connect fails at once, an unanswered one within 3 s (gdb's defaults: 15 s
# of retries).
FAST_CONNECT = ("set tcp auto-retry off", "set tcp connect-timeout 3")


def gdb_setup(ep: Endpoint, remotetimeout: int) -> list[str]:
    """The commands gdb runs as it starts, for a target at ``ep``."""
    # kdbg loads the kernel's gdb scripts itself, once attached (a built kernel's
    # vmlinux-gdb.py beside its vmlinux would otherwise be offered, and refused)
    setup = [f"set remotetimeout {remotetimeout}", *FAST_CONNECT,
             "set auto-load python-scripts off"]
    if ep.transport.baud and ep.device is not None:
        setup.append(f"set serial baud {ep.baud}")
    return setup


class Connection:
    """A session's start, once gdb runs: symbols and helpers loaded, KGDBoE's probe
    run meanwhile, attached. ``attach_note`` in the state says what attaching took."""

    def __init__(self, gdb: GdbProcess, state: SessionState) -> None:
        self.gdb, self.state = gdb, state
        self.probe: breakin.Probe | None = None  # a udp: stub's, run while gdb loads symbols

    def start_probe(self) -> None:
        """Start KGDBoE's probe (:class:`breakin.Probe`) when the transport wakes that way."""
        ep = self.state.endpoint
        if ep.transport.wake is Wake.PROBE:
            self.probe = breakin.Probe(ep, self.state.gdb_prefix)

    def stop_probe(self) -> bool:
        """Stop KGDBoE's probe if it still runs; whether it may have stopped the target."""
        probe, self.probe = self.probe, None
        if probe is None:
            return False
        probe.stop()
        return probe.may_have_stopped

    def setup(self, timeout: float) -> None:
        """Load the vmlinux and kdbg's gdb helpers, and tell them about the target."""
        g, state = self.gdb, self.state
        # symbol-file does not set gdb's architecture (only an exec file does), and
        # kgdb, unlike QEMU's stub, sends no target description: without this, gdb
        # talks to a kgdboc/KGDBoE target as i386 and has no rip.
        g.console("set architecture i386:x86-64", timeout)
        if state.vmlinux is not None:
            cmd = f"symbol-file -o 0x{state.kaslr_offset:x} {state.vmlinux}"
            if state.kaslr_offset == 0:
                cmd = f"symbol-file {state.vmlinux}"
            g.console(cmd, timeout=max(timeout, 120.0))
        if state.tree.dirs:  # the kernel's own source, where its DWARF file names resolve
            g.console("directory " + " ".join(str(d) for d in state.tree.dirs), timeout)
        for helper in ("kdbg_kallsyms.py", "kdbg_session.py", "kdbg_guard.py"):
            path = GDB_DIR / helper
            if path.exists():
                g.console(f"source {path}", timeout)
        session_script = GDB_DIR / "kdbg_session.gdb"
        if session_script.exists():
            g.console(f"source {session_script}", timeout)
        if state.kallsyms_file is not None and (GDB_DIR / "kdbg_kallsyms.py").exists():
            g.console(f"kdbg-kallsyms {state.kallsyms_file}", timeout)
        if (GDB_DIR / "kdbg_guard.py").exists():
            # gdb's own kdbg-break asks the same guard, about the same target.
            g.console(f"kdbg-guard transport {state.transport}", timeout)
            if state.kallsyms_file is not None:
                g.console(f"kdbg-guard kallsyms {state.kallsyms_file}", timeout)
            if state.vmlinux is not None:
                g.console(f"kdbg-guard vmlinux {state.vmlinux} 0x{state.kaslr_offset or 0:x}",
                          timeout)

    def load_helpers(self, timeout: float) -> None:
        """Once attached: Linux's own gdb scripts (lx-dmesg, lx-ps, $lx_current(), ...)
        when the kernel's tree has them, then kdbg's commands at the prompt (kdbg-skb,
        kdbg-rule, kdbg-where and kdbg's lx-symbols, which replaces Linux's), and the
        transport's stepping set-up. What cannot load is one line in ``state.notes``."""
        g, state = self.gdb, self.state
        scripts = state.tree.gdb_scripts
        if scripts is not None:
            try:
                g.console(f"source {scripts}", max(timeout, 60.0))
                # Linux's helpers guess their stub, and miss kgdb on some kernels:
                # kdbg tells them (gdb/kdbg_linux.py)
                g.console(f"source {GDB_DIR / 'kdbg_linux.py'}", timeout)
                server = "kgdb" if state.endpoint.transport.kgdb else "qemu"
                g.console(f"kdbg-linux {server}", timeout)
            except GdbError as err:
                state.notes.append(f"Linux's gdb helpers did not load from {scripts}: "
                                   f"{first_line(str(err))}")
        elif state.tree.note:
            state.notes.append(state.tree.note)
        prompt = GDB_DIR / "kdbg_prompt.py"
        if prompt.exists():
            g.console(f"source {prompt}", timeout)
        transport = state.endpoint.transport
        for command in transport.step_setup:
            with contextlib.suppress(GdbError):
                g.console(command, timeout)
        if transport.guard_steps:
            g.console(f"source {GDB_DIR / 'kdbg_steps.gdb'}", timeout)
        if transport.kgdb:  # commands that make kgdb read a dead task's stack
            g.console(f"source {GDB_DIR / 'kdbg_kgdb.gdb'}", timeout)

    def attach(self, timeout: float) -> None:
        """``target remote`` the endpoint; the target is stopped after it."""
        self.state.attached = True  # from here on, a failure must detach (or release)
        ep = self.state.endpoint
        try:
            self._target_select(timeout)
        except GdbTimeout as err:
            raise TargetUnreachable(
                f"no answer from a gdb stub at {ep} within {timeout:g} s",
                hint=ep.transport.attach_hint,
            ) from err
        except GdbDied:
            raise
        except GdbError as err:
            raise TargetUnreachable(f"cannot attach to {ep}: {err}",
                                    hint=ep.transport.attach_hint) from err
        self.state.running = False
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
        state, ep = self.state, self.state.endpoint
        probed = self.probe.result() if self.probe is not None else None
        if probed == "broke-in":
            state.attach_note = breakin.BROKE_IN
        command = f"-target-select remote {ep.gdb_target}"
        token = self.gdb.send(command)
        # without the probe's word a KGDBoE target gets the byte the way kgdboc gets SysRq-G
        wake = ep.transport.wake
        can_wake = (wake is Wake.PROBE and probed is None) or (
            wake is Wake.SYSRQ_G and state.interrupter is not None)
        if can_wake and timeout > breakin.ANSWER_WITHIN:
            try:
                self.gdb.reply(token, command, breakin.ANSWER_WITHIN, keep=True)
                return
            except GdbTimeout:
                if wake is Wake.PROBE:
                    breakin.nudge(ep, state.gdb_prefix)
                    state.attach_note = breakin.BROKE_IN
                else:
                    assert state.interrupter is not None
                    state.interrupter()
                    state.attach_note = breakin.SYSRQ_G
                timeout -= breakin.ANSWER_WITHIN
        self.gdb.reply(token, command, timeout)


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` (gdb's errors can run to a traceback)."""
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), text)


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


def load_kallsyms(kallsyms: Kallsyms | str | Path | None) -> tuple[Kallsyms | None, Path | None]:
    """(table, a file gdb's helper can read) for ``kallsyms``."""
    if kallsyms is None:
        return None, None
    if isinstance(kallsyms, Kallsyms):
        return kallsyms, None
    path = Path(kallsyms)
    return Kallsyms.load(path), path


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
