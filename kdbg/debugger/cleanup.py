"""Leaving the target clean: our breakpoints deleted, the target resumed, gdb detached;
a fresh gdb's attach and detach when the session's gdb died; SIGTERM and a second
Ctrl-C held off meanwhile."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from kdbg.debugger.errors import SessionInterrupted
from kdbg.debugger.gdbproc import GdbProcess
from kdbg.debugger.mi import as_int
from kdbg.debugger.model import Breakpoint, CleanupReport
from kdbg.debugger.runcontrol import RunControl
from kdbg.debugger.state import SessionState
from kdbg.debugger.watchdog import Watchdog, release
from kdbg.errors import GdbError, KdbgError
from kdbg.prompt.state import VERSION as STATE_VERSION
from kdbg.transports import Recovery

log = logging.getLogger("kdbg.debugger")

DONE_MARKER = "@@kdbg-done@@"
CLOSE_BUDGET = 1.5  # s: interrupt, delete, detach through the session's gdb
RECOVER_BUDGET = 3.0  # s: a fresh gdb's attach and detach, when that failed


def _never() -> bool:
    return False


class Cleanup:
    """Ending a session, whatever ended it: through the session's gdb (``run`` stops a
    running target first), else with a fresh gdb; the session's :class:`Watchdog` is
    disarmed and its SIGTERM handler put back."""

    def __init__(self, gdb: GdbProcess, state: SessionState, run: RunControl, *,
                 loud: bool = True) -> None:
        self.gdb, self.state, self.run, self.loud = gdb, state, run, loud
        self.watchdog: Watchdog | None = None
        self._old_sigterm: Any = None

    def interactive(self, banner: str | None = None,
                    stop: dict[str, Any] | None = None) -> CleanupReport:
        """Give the user gdb's prompt on this target (stopped), then clean up.

        The prompt is the same gdb, so breakpoints, symbols and the kdbg helpers
        (``kdbg-kallsyms``, ``kdbg-break``, ``kdbg-skb``...) are there; what kdbg knows
        of the stop (``stop``: the stop, the drop that armed it) and of its breakpoints
        is given to them first (:meth:`tell_prompt`). ``kdbg-done``, ``quit`` or Ctrl-]
        ends it; then kdbg deletes the breakpoints, resumes the target and detaches.
        """
        state = self.state
        if state.running:
            self.run.interrupt()
        self.tell_prompt(stop or {})
        text = banner or ""
        if text and not text.endswith("\n"):
            text += "\n"  # every kdbg message at the prompt on its own line
        text += (
            f"kdbg: gdb on {state.endpoint} ({state.transport}); the target is stopped.\n"
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

    def tell_prompt(self, stop: dict[str, Any]) -> None:
        """Write what kdbg knows for the prompt's commands (``kdbg-state FILE``; the
        schema is :mod:`kdbg.prompt.state`'s): the transport, kdbg's breakpoints with the
        guard's decision for each, where the modules' debug files are, and ``stop``'s
        facts. Skipped when the helpers did not load."""
        facts = {"version": STATE_VERSION, "transport": self.state.transport,
                 "endpoint": str(self.state.endpoint),
                 "breakpoints": [bp.to_json() for bp in self.state.breakpoints.values()],
                 "module_roots": [str(r) for r in self.state.module_roots], **stop}
        folder = Path(tempfile.mkdtemp(prefix="kdbg-prompt-"))  # mode 0700
        path = folder / "state.json"
        path.write_text(json.dumps(facts))
        try:
            self.gdb.console(f"kdbg-state {path}", 10.0)
        except GdbError as err:
            log.debug("kdbg-state: %s", err)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _refresh_breakpoints(self) -> None:
        reply = self.gdb.command("-break-list", 10.0)
        table = reply.payload.get("BreakpointTable", {})
        for item in table.get("body", []):
            b = item.get("bkpt", item) if isinstance(item, dict) else {}
            num = as_int(b.get("number"))
            addr = as_int(b.get("addr")) or 0
            if num is not None and num not in self.state.breakpoints:
                self.state.breakpoints[num] = Breakpoint(num, addr, "user",
                                                         "hw" in str(b.get("type")))

    def detach(self, timeout: float = 10.0) -> None:
        """Detach from a stopped target; the stub resumes it."""
        self.state.detaching = True
        self.gdb.command("-target-detach", timeout)
        self.state.running = True

    def close(self, timeout: float = CLOSE_BUDGET) -> CleanupReport:
        """Delete our breakpoints, resume the target, detach and stop gdb. Idempotent.

        Through this session's gdb it takes at most ``timeout`` s; if that fails (gdb died,
        the target does not answer), a fresh gdb attaches and detaches within
        :data:`RECOVER_BUDGET` s more, and a target that is gone is said to be gone at
        once. Ctrl-C and SIGTERM wait until this is done. Never raises for cleanup
        failures: returns a :class:`CleanupReport` (and writes it to stderr when the
        session is ``loud`` and something could not be done).
        """
        state = self.state
        if state.closed and state.last_report is not None:
            return state.last_report
        state.closed = True
        self.gdb.cancel = _never  # the clean-up itself is never abandoned
        report = CleanupReport()
        with signals_deferred():
            try:
                self._cleanup(report, time.monotonic() + timeout)
            finally:
                self.gdb.kill()
                self.restore_sigterm()
                self._disarm()
                for path in state.symbol_files:
                    path.unlink(missing_ok=True)
                state.symbol_files.clear()
        state.last_report = report
        if not report.ok and self.loud:
            sys.stderr.write(f"kdbg: WARNING: {report.message()}\n")
            sys.stderr.flush()
        return report

    def _cleanup(self, report: CleanupReport, deadline: float) -> None:
        def left() -> float:
            return max(deadline - time.monotonic(), 0.1)

        if self.gdb.alive:
            try:
                if self.state.running:
                    self.run.interrupt(left())
                    report.steps.append("interrupted the target")
                for num in sorted(self.state.breakpoints):
                    self.gdb.command(f"-break-delete {num}", left())
                    report.steps.append(f"deleted breakpoint {num}")
                self.state.breakpoints.clear()
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
        state, ep = self.state, self.state.endpoint
        bps = ", ".join(f"0x{b.address:x}" for b in state.breakpoints.values())
        if (ep.transport.recovery is Recovery.SYSRQ_G and state.running
                and state.interrupter is not None):
            with contextlib.suppress(KdbgError, OSError):
                state.interrupter()  # kgdb answers a fresh gdb only once stopped
        result = release(ep, gdb=state.gdb_path, prefix=state.gdb_prefix, timeout=timeout)
        if result.ok:
            state.breakpoints.clear()
            state.running = True
            report.steps.append(result.detail)
            return
        report.ok = False
        report.problems.append(result.detail)
        if result.gone:
            report.target_state = f"gone ({ep} has nothing behind it)"
            return
        how = "running" if state.running else "STOPPED (halted in the debugger)"
        report.target_state = (
            f"{how} on {ep}, with kdbg's breakpoints possibly still set"
            + (f" at {bps}" if bps else "")
            + "; attach gdb and detach to release it"
        )

    def abandon(self, stop_probe: Callable[[], bool]) -> CleanupReport:
        """A connect that failed half-way: detach if attached, else just stop gdb; a
        target KGDBoE's probe may have stopped (``stop_probe`` stops the probe and says
        so) is released by a fresh gdb."""
        self.state.closed = True
        report = CleanupReport(target_state="running, untouched (gdb had not attached)")
        with signals_deferred():
            try:
                probe_stopped = stop_probe()
                if self.state.attached:
                    report.target_state = "running, no kdbg breakpoints"
                    try:
                        self.detach(0.5)
                        report.steps.append("detached (the target resumed)")
                    except (GdbError, OSError):
                        self.gdb.kill()
                        self._recover(report, RECOVER_BUDGET)
                elif probe_stopped:  # gdb never attached, but the kernel may be in kgdb
                    report.target_state = "running, no kdbg breakpoints"
                    report.steps.append("KGDBoE's probe may have stopped the target")
                    self._recover(report, RECOVER_BUDGET)
            finally:
                self.gdb.kill()
                self._disarm()
        self.state.last_report = report
        return report

    def _disarm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.disarm()
            self.watchdog = None

    def install_sigterm(self) -> None:
        """Turn SIGTERM into :class:`SessionInterrupted` while the session is open (in the
        main thread, unless a handler of someone else's is set)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise SessionInterrupted("terminated by SIGTERM; cleaning up the debug session")

        self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    def restore_sigterm(self) -> None:
        """Put back SIGTERM's handler from before :meth:`install_sigterm`."""
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
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
