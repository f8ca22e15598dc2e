"""What a debug session knows of its target and what it did to it: the state its
collaborators share.

A :class:`~kdbg.debugger.session.Session` is composed of collaborators, each holding
the session's one gdb (:class:`~kdbg.debugger.gdbproc.GdbProcess`) and its one
:class:`SessionState`: :class:`~kdbg.debugger.connection.Connection` (attaching),
:class:`~kdbg.debugger.inspection.Inspection` (reading a stopped target),
:class:`~kdbg.debugger.runcontrol.RunControl` (running, stopping, breakpoints through
the guard) and :class:`~kdbg.debugger.cleanup.Cleanup` (leaving the target clean,
recovering when gdb died).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.gdbproc import DEFAULT_GDB
from kdbg.debugger.mi import Record
from kdbg.debugger.model import Breakpoint, CleanupReport, KernelTree
from kdbg.symbols.kallsyms import Kallsyms


def is_stopped(rec: Record) -> bool:
    """Whether ``rec`` is gdb's ``*stopped``."""
    return rec.kind == "exec" and rec.klass == "stopped"


@dataclass(eq=False)
class SessionState:
    """gdb attached to one target kernel: the facts and the bookkeeping."""

    # the target and what is known of it
    endpoint: Endpoint
    kallsyms: Kallsyms | None = None
    kallsyms_file: Path | None = None  # the copy ``kallsyms`` was read from, for gdb's helpers
    vmlinux: Path | None = None
    has_dwarf: bool = False
    kaslr_offset: int = 0
    interrupter: Callable[[], None] | None = None  # stops a running target (SysRq-G)
    guard_transport: str | None = None  # judge breakpoints as for this transport instead
    tree: KernelTree = field(default_factory=KernelTree)  # the kernel's source, its gdb scripts
    module_roots: tuple[Path, ...] = ()  # where its modules' debug files are
    # how a fresh gdb reaches the target when the session's died
    gdb_path: str = DEFAULT_GDB
    gdb_prefix: tuple[str, ...] = ()
    # what this session did to the target, and what it heard
    breakpoints: dict[int, Breakpoint] = field(default_factory=dict)
    running: bool = False
    closed: bool = False
    attached: bool = False  # from the attach on, a failure must detach (or release)
    detaching: bool = False
    last_report: CleanupReport | None = None
    lost: str | None = None  # why the target is gone, once gdb has said so
    attach_note: str | None = None  # what attaching took (a break-in), for the user
    notes: list[str] = field(default_factory=list)  # what could not be loaded, a line each
    symbol_files: list[Path] = field(default_factory=list)  # kdbg wrote them; gone at close

    @property
    def transport(self) -> str:
        """The guard's name for this session's transport: gdbstub, kgdboc or kgdboe.

        ``guard_transport``, when set, overrides what the endpoint implies: the guard
        then judges breakpoints as if the session ran over that transport (to rehearse
        a KGDBoE session on a lab's QEMU stub, say).
        """
        return self.guard_transport or self.endpoint.transport.name

    def hear(self, rec: Record) -> None:
        """Follow gdb's async records: the target running, stopped, or lost."""
        if rec.kind == "exec" and rec.klass == "running":
            self.running = True
        elif rec.kind == "exec" and rec.klass == "stopped":
            self.running = False
        elif (rec.kind == "notify" and rec.klass == "thread-group-exited"
              and self.attached and not self.detaching):
            # gdb lost the remote connection (the lab's QEMU died, the link broke)
            self.lost = f"gdb lost its connection to {self.endpoint}"
            self.running = False
