"""Release the target when kdbg cannot: after SIGKILL, or when its own gdb died.

gdb dies with kdbg (``PR_SET_PDEATHSIG``), but a stub keeps what gdb left behind: QEMU
keeps its breakpoints and stays stopped if it was, kgdb keeps its breakpoints. So a
:class:`Watchdog` process is started with every session. It reads a pipe from kdbg;
when kdbg closes the session it writes ``ok`` and the watchdog exits. If the pipe
ends without ``ok`` (kdbg was killed), it waits for kdbg's gdb to be gone and runs
:func:`release`: a fresh ``gdb --batch`` attaches and detaches, so the stub deletes every
breakpoint and resumes the target. It runs in its own session (a Ctrl-C on kdbg's
terminal does not reach it) and lives at most :data:`RELEASE_TIMEOUT` seconds longer
than kdbg.

Run as ``python -m kdbg.debugger.watchdog ENDPOINT GDB_PID GDB [PREFIX...]``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from kdbg.debugger import reach
from kdbg.debugger.breakin import nudge
from kdbg.debugger.endpoint import Endpoint
from kdbg.errors import KdbgError
from kdbg.lifetime import die_with_parent
from kdbg.transports import Recovery

RELEASE_TIMEOUT = 4.0
OK = b"ok"


@dataclass(frozen=True)
class Released:
    """What :func:`release` did: ``ok``, a one-line account, and whether nothing was
    behind the endpoint any more (``gone``)."""

    ok: bool
    detail: str
    gone: bool = False


def release(ep: Endpoint, *, gdb: str = "gdb", prefix: Sequence[str] = (),
            timeout: float = RELEASE_TIMEOUT) -> Released:
    """Attach a fresh gdb to ``ep`` and detach at once: the stub drops every breakpoint
    and resumes. Within ``timeout`` s; says "gone" at once when nothing is behind ``ep``."""
    if not prefix:
        try:
            reach.check(ep)
        except KdbgError as err:
            return Released(False, f"the target is gone: {err}", gone=True)
    if ep.transport.recovery is Recovery.NUDGE:
        nudge(ep, prefix)  # KGDBoE stops on 0x03 once its gdb is lost (from gdb's netns)
        time.sleep(0.2)
    secs = max(1, int(timeout))
    argv = [*prefix, gdb, "--nx", "--batch", "-ex", "set confirm off",
            "-ex", "set tcp auto-retry off", "-ex", f"set tcp connect-timeout {secs}",
            "-ex", f"set remotetimeout {secs}", "-ex", "set architecture i386:x86-64",
            "-ex", f"target remote {ep.gdb_target}", "-ex", "detach"]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        return Released(False, f"no answer from {ep} within {timeout:g} s")
    except OSError as err:
        return Released(False, f"cannot run gdb: {err}")
    out = proc.stdout + proc.stderr
    if "detached" in out or "Detaching" in out:
        return Released(True, "reattached with a fresh gdb and detached (the target resumed)")
    last = [ln for ln in out.splitlines() if ln.strip()][-1:] or ["no output"]
    return Released(False, f"a fresh gdb could not attach and detach: {last[0]}")


class Watchdog:
    """The guardian process of one session (see the module docstring)."""

    def __init__(self, ep: Endpoint, gdb_pid: int, *, gdb: str = "gdb",
                 prefix: Sequence[str] = ()) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kdbg.debugger.watchdog", str(ep), str(gdb_pid), gdb,
                 *prefix],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_ignore_sigint,
            )
        finally:
            os.close(read_end)

    def disarm(self) -> None:
        """The session is closed cleanly: the watchdog has nothing left to do. It is told
        so and stopped (by its PID) at once, rather than waited for."""
        if self._write_end >= 0:
            with contextlib.suppress(OSError):
                os.write(self._write_end, OK)
            os.close(self._write_end)
            self._write_end = -1
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _ignore_sigint() -> None:
    """Before exec: SIGINT ignored from the start (Python keeps an inherited SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def main(argv: Sequence[str]) -> int:
    """Wait for kdbg's word; if kdbg dies without it, release the target."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ep_text, gdb_pid, gdb, *prefix = argv
    data = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    if OK in data:
        return 0
    _wait_gone(int(gdb_pid), 1.0)
    result = release(Endpoint.parse(ep_text), gdb=gdb, prefix=prefix)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
