"""Ctrl-C and SIGTERM as a flag that long-running loops poll.

Raising KeyboardInterrupt from a signal handler could land inside bcc's ctypes
callback, where the exception is swallowed, or between gdb commands; so every
kdbg loop that must end cleanly installs :class:`StopSignals` and checks it.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

WATCHED = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Installed by :meth:`install`; ``signal`` is the first signal received (0: none)."""

    def __init__(self) -> None:
        self.signal = 0
        self._old: dict[int, Any] = {}

    @classmethod
    def install(cls) -> StopSignals:
        stop = cls()

        def on_signal(sig: int, _frame: FrameType | None) -> None:
            stop.signal = stop.signal or sig

        stop._old = {sig: signal.signal(sig, on_signal) for sig in WATCHED}
        return stop

    def __bool__(self) -> bool:
        return self.signal != 0

    def restore(self) -> None:
        """Put back the handlers that were there before (idempotent)."""
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}
