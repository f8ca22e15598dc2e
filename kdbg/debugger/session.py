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

from kdbg.debugger.cleanup import LIVE
from kdbg.debugger.closing import Closing
from kdbg.debugger.connection import Connection, default_guard

__all__ = ["Session", "default_guard"]


class Session(Connection, Closing):
    """gdb attached to one target kernel. Build with :meth:`connect`; use as a context manager.

    After :meth:`connect` the target is *stopped* (QEMU's stub and kgdb both stop it on
    attach). Every method waits at most its ``timeout``. The parts, each in its own
    module: connecting (:mod:`~kdbg.debugger.connection`), clean-up and recovery
    (:mod:`~kdbg.debugger.cleanup`), run control and breakpoints through the guard
    (:mod:`~kdbg.debugger.runcontrol`), inspection (:mod:`~kdbg.debugger.inspection`).
    """


def _close_all() -> None:
    for session in list(LIVE):
        if not session.closed:
            session.close()


atexit.register(_close_all)
