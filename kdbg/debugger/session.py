"""A debug session: one gdb, one target kernel, and the promise to leave it clean.

Typical use (what ``kdbg watch --break`` does)::

    with Session.connect("tcp:127.0.0.1:1234", kallsyms=ksyms) as s:
        s.run.resume()                      # the target runs while the tracer watches
        site, bp = s.run.break_drop_site(event.location)   # interrupts, arms, resumes
        stop = s.run.wait_stop(timeout=60)  # Stop with a trusted, symbolized backtrace
        print(stop.backtrace)
    # leaving the block: our breakpoints deleted, target resumed, gdb detached

A session is composed of collaborators that share its gdb and its
:class:`~kdbg.debugger.state.SessionState` (``s.state``): ``s.run``
(:class:`~kdbg.debugger.runcontrol.RunControl`: resume, interrupt, wait, breakpoints
through the guard), ``s.inspect`` (:class:`~kdbg.debugger.inspection.Inspection`:
registers, memory, symbols, backtraces) and ``s.cleanup``
(:class:`~kdbg.debugger.cleanup.Cleanup`); :meth:`Session.connect` attaches through a
:class:`~kdbg.debugger.connection.Connection`.

:meth:`Session.close` runs on normal exit, on exceptions, on SIGINT (KeyboardInterrupt)
and on SIGTERM (turned into :class:`SessionInterrupted` while a session is open). If gdb
itself dies, ``close`` starts a fresh gdb, reconnects and detaches, which makes the stub
(QEMU or kgdb) drop every breakpoint and resume. Whatever it cannot do, it reports in a
:class:`CleanupReport` and, by default, loudly on stderr, naming the target's state.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from kdbg.debugger import reach
from kdbg.debugger.cleanup import CLOSE_BUDGET, Cleanup
from kdbg.debugger.closing import Closing
from kdbg.debugger.connection import (
    Connection,
    default_guard,
    gdb_setup,
    load_kallsyms,
    vmlinux_facts,
)
from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.gdbproc import DEFAULT_GDB, GdbProcess
from kdbg.debugger.inspection import Inspection
from kdbg.debugger.model import CleanupReport, KernelTree
from kdbg.debugger.runcontrol import RunControl
from kdbg.debugger.state import SessionState
from kdbg.debugger.watchdog import Watchdog
from kdbg.dirs import GDB_DIR
from kdbg.guard.judge import Guard
from kdbg.symbols.bpfjit import JitedImage, JitedLine
from kdbg.symbols.evidence import TargetSymbols
from kdbg.symbols.kallsyms import Kallsyms

__all__ = ["Session", "default_guard"]

# Open sessions, closed at exit: held here until closed, so a session nobody holds any
# more is closed too (its gdb's callbacks no longer hold it, as the chain's did).
LIVE: set[Session] = set()


class Session(Closing):
    """gdb attached to one target kernel. Build with :meth:`connect`; use as a context manager.

    After :meth:`connect` the target is *stopped* (QEMU's stub and kgdb both stop it on
    attach). Every method waits at most its ``timeout``. ``guard`` judges every
    breakpoint ``run`` sets.
    """

    def __init__(self, gdb: GdbProcess, state: SessionState, guard: Guard, *,
                 loud: bool = True) -> None:
        self.gdb, self.state, self.guard = gdb, state, guard
        self.inspect = Inspection(gdb, state)
        self.run = RunControl(gdb, state, guard, self.inspect)
        self.cleanup = Cleanup(gdb, state, self.run, loud=loud)

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
        tree: KernelTree | None = None,
        module_roots: Sequence[Path] = (),
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
        ``tree`` is the kernel's own source and gdb scripts (see
        :meth:`Connection.load_helpers`); ``module_roots`` where its modules' debug files
        are, for kdbg's ``lx-symbols`` at the prompt.

        An endpoint with nothing behind it raises :class:`TargetUnreachable` before gdb
        starts (:mod:`kdbg.debugger.reach`). gdb dies with kdbg; unless ``watchdog`` is
        False, a :class:`Watchdog` process releases the target if kdbg is killed before
        it could close the session.
        """
        ep = endpoint if isinstance(endpoint, Endpoint) else Endpoint.parse(endpoint)
        if not gdb_prefix:  # under a prefix (another netns) this host's sockets tell nothing
            reach.check(ep)
        ksyms, ksyms_file = load_kallsyms(kallsyms)
        vm = Path(vmlinux) if vmlinux is not None else None
        has_dwarf, offset = vmlinux_facts(vm, ksyms, kaslr_offset)
        state = SessionState(ep, kallsyms=ksyms, kallsyms_file=ksyms_file or kallsyms_file,
                             vmlinux=vm, has_dwarf=has_dwarf, kaslr_offset=offset,
                             interrupter=interrupter, gdb_path=gdb,
                             gdb_prefix=tuple(gdb_prefix), tree=tree or KernelTree(),
                             module_roots=tuple(module_roots))
        proc = GdbProcess(gdb, setup=gdb_setup(ep, remotetimeout),
                          start_timeout=min(timeout, 30.0), on_async=state.hear,
                          prefix=gdb_prefix)
        session = cls(proc, state, guard or default_guard(target_symbols, ksyms, vm, offset, ep),
                      loud=loud)
        LIVE.add(session)
        connection = Connection(proc, state)
        try:
            if watchdog:
                session.cleanup.watchdog = Watchdog(ep, proc.pid, gdb=gdb, prefix=gdb_prefix)
            connection.start_probe()
            connection.setup(timeout)
            connection.attach(timeout)
            connection.load_helpers(timeout)
        except BaseException as err:
            # what was done goes with the error (a break-watch reports it as its cleanup)
            err.kdbg_cleanup = session.cleanup.abandon(  # type: ignore[attr-defined]
                connection.stop_probe)
            LIVE.discard(session)
            raise
        if handle_sigterm:
            session.cleanup.install_sigterm()
        return session

    def close(self, timeout: float = CLOSE_BUDGET) -> CleanupReport:
        """Delete our breakpoints, resume the target, detach and stop gdb. Idempotent;
        never raises for a clean-up failure (see :meth:`Cleanup.close`)."""
        report = self.cleanup.close(timeout)
        LIVE.discard(self)
        return report

    def interactive(self, banner: str | None = None,
                    stop: dict[str, Any] | None = None) -> CleanupReport:
        """Give the user gdb's prompt on the stopped target, then clean up (see
        :meth:`Cleanup.interactive`)."""
        report = self.cleanup.interactive(banner, stop)
        LIVE.discard(self)
        return report

    def lean_stops(self, lean: bool = True, timeout: float = 10.0) -> None:
        """While kdbg alone reads the stops (``watch --break``), gdb describes a stop
        without its function's arguments: it finds those in DWARF, their entry values by
        searching call sites, which took 0.1-0.5 s under TCG at a stop in code gdb had
        not looked at yet (an interrupt to arm lands anywhere). ``lean=False`` gives
        the user's prompt gdb's own defaults back (gdb runs with ``--nx``)."""
        for name, lean_value, default in LEAN_STOP_SETTINGS:
            self.gdb.console(f"set {name} {lean_value if lean else default}", timeout)

    def listen(self, timeout: float = 0.0) -> None:
        """Hear what gdb has to say for up to ``timeout`` s without waiting for anything
        in particular: a target gdb lost shows in ``state.lost`` even with nothing armed."""
        self.gdb.poll(timeout)

    def give_way(self, cancel: Callable[[], bool]) -> None:
        """From now on a slow gdb command gives way while ``cancel()`` is true (gdb's
        Quit interrupts it, :class:`GdbCancelled` is raised), so a Ctrl-C is not held up
        by it. The clean-up itself never gives way."""
        self.gdb.cancel = cancel

    def add_jited(self, images: Sequence[JitedImage], lines: Sequence[JitedLine] = (),
                  timeout: float = 30.0) -> Path:
        """Name the JITed BPF functions ``images`` from now on: here, in the guard, and in
        gdb, with their source ``lines`` (a synthetic symbol file, deleted at close); the
        file's path."""
        if self.state.kallsyms is not None:
            self.state.kallsyms.add_jited(images)
        self.guard.add_jited(images)
        self.inspect.forget_symbols()
        return self.inspect.load_jited(images, lines, timeout)

    def use_kallsyms(self, table: Kallsyms, path: Path, timeout: float = 30.0) -> None:
        """Name addresses from ``table`` (the copy of the target's kallsyms at ``path``)
        from now on: here, in gdb's frame namer and in the guard."""
        self.state.kallsyms = table
        self.state.kallsyms_file = path
        self.inspect.forget_symbols()
        self.guard.use_kallsyms(table)
        if (GDB_DIR / "kdbg_kallsyms.py").exists():
            self.gdb.console(f"kdbg-kallsyms {path}", timeout)
        if (GDB_DIR / "kdbg_guard.py").exists():
            self.gdb.console(f"kdbg-guard kallsyms {path}", timeout)


# (setting, while kdbg reads stops, gdb's default)
LEAN_STOP_SETTINGS = (("print frame-arguments", "none", "scalars"),
                      ("print entry-values", "no", "default"))


def _close_all() -> None:
    for session in list(LIVE):
        if not session.state.closed:
            session.close()


atexit.register(_close_all)
