"""Child processes that cannot outlive kdbg, and SIGTERM handled like Ctrl-C.

gdb, socat and addr2line are started with :func:`die_with_parent` as their
``preexec_fn``: Linux's ``PR_SET_PDEATHSIG`` then sends them SIGKILL the moment the
thread that started them ends, also when kdbg itself is killed with SIGKILL and
runs no clean-up of its own. (The signal follows the *thread* that forked, so these
children are started from the main thread or from threads that live as long as kdbg.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

PR_SET_PDEATHSIG = 1

_libc: Any = None


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In a forked child, before exec: ask for ``sig`` when the parent dies.

    Runs between fork and exec, so it only calls prctl(2) and getppid(2). If the
    parent is already gone (it died between the fork and this call), the child
    kills itself.
    """
    parent = os.getppid()
    libc = _libc or ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def preload() -> None:
    """Resolve libc before any fork, so the child's preexec_fn does no dlopen."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)


preload()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so every command ends
    through the same clean-up paths (``finally`` blocks, context managers)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated("terminated by SIGTERM")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises :class:`Terminated` in the main thread (the CLI runs each
    command so); after: the handler that was there before, so a command run in-process
    (a test's) leaves its caller's signals as they were."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)

