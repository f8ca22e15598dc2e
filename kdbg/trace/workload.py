"""``--cmd``: the workload a tracer starts once attached, and ends if it is still running."""

from __future__ import annotations

import subprocess
import sys


class Workload:
    """``cmd`` run through the shell, its stdout sent to our stderr so it never mixes
    into the tracer's output stream. Nothing happens when ``cmd`` is None."""

    def __init__(self, cmd: str | None) -> None:
        self.cmd = cmd
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.cmd is not None:
            self._proc = subprocess.Popen(self.cmd, shell=True, stdout=sys.stderr.fileno())

    def exited(self) -> bool:
        return self._proc is not None and self._proc.poll() is not None

    def finish(self) -> int | None:
        """Its exit status (128+N if killed by signal N); None when there was no workload
        or it was still running: then we stopped first (count, duration, Ctrl-C), end it,
        and report our own success rather than the signal we sent it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        status = proc.poll()
        if status is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return None
        return 128 - status if status < 0 else status
