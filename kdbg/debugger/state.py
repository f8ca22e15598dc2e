"""What a debug session knows: its gdb, its target and what it did to it.

:class:`SessionState` holds the state every part of a session shares; the parts are
layered on it, each using only those below: :class:`~kdbg.debugger.inspection.Inspection`
(reading a stopped target), :class:`~kdbg.debugger.runcontrol.RunControl` (running,
stopping, breakpoints through the guard), :class:`~kdbg.debugger.cleanup.Cleanup`
(leaving the target clean, recovering when gdb died), and
:class:`~kdbg.debugger.connection.Connection` (starting gdb and attaching), which
:class:`~kdbg.debugger.session.Session` completes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdbg.debugger.breakin import Probe
from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.gdbproc import GdbProcess
from kdbg.debugger.mi import Record
from kdbg.debugger.model import Breakpoint, CleanupReport
from kdbg.debugger.watchdog import Watchdog
from kdbg.guard.judge import Guard
from kdbg.symbols.kallsyms import Kallsyms


def is_stopped(rec: Record) -> bool:
    """Whether ``rec`` is gdb's ``*stopped``."""
    return rec.kind == "exec" and rec.klass == "stopped"


class SessionState:
    """gdb attached to one target kernel: the facts and the bookkeeping."""

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
        # the target and what is known of it
        self.gdb, self.endpoint, self.guard = gdb, endpoint, guard
        self.kallsyms, self.kallsyms_file = kallsyms, kallsyms_file
        self.vmlinux, self.has_dwarf, self.kaslr_offset = vmlinux, has_dwarf, kaslr_offset
        self.interrupter = interrupter
        self.guard_transport: str | None = None
        # what this session did to it, and what it heard
        self.breakpoints: dict[int, Breakpoint] = {}
        self.running = self.closed = False
        self.last_report: CleanupReport | None = None
        self.lost: str | None = None  # why the target is gone, once gdb has said so
        self.attach_note: str | None = None  # what attaching took (a break-in), for the user
        self._attached = self._detaching = False
        # how a fresh gdb reaches the target when this one died
        self._gdb_path, self._gdb_prefix = gdb_path, gdb_prefix
        self._remotetimeout, self._loud = remotetimeout, loud
        self._watchdog: Watchdog | None = None
        self._probe: Probe | None = None  # a udp: stub's, run while gdb loads symbols
        self._old_sigterm: Any = None
        self._tmpfile: Path | None = None
        # caches
        self._regnums: dict[str, int] | None = None
        self._sym_cache: dict[int, tuple[str | None, int, str | None]] = {}
