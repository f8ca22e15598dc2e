"""The gdb process: a CLI console on a pexpect pty, and an MI3 channel on a second pty.

gdb is started with ``--nx`` (no ``~/.gdbinit``) as an ordinary console gdb under
pexpect, and ``new-ui mi3 PTY`` gives it a second, MI, user interface on a pty that kdbg
holds. Structured traffic goes over MI only; the console exists so that the interactive
handoff (:meth:`GdbProcess.interact`) gives the user a real gdb prompt in the *same*
process, on the same target connection, with everything kdbg set up still in place.

gdb runs in its own session (pexpect's pty), so a Ctrl-C on kdbg's terminal reaches
kdbg only; kdbg decides what gdb and the target see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import select
import shutil
import signal
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Sequence

import pexpect

from kdbg.debugger.errors import GdbCancelled, GdbDied
from kdbg.debugger.mi import LineSplitter, Record, Reply, Router, parse_line, quote
from kdbg.errors import GdbError, GdbTimeout
from kdbg.lifetime import die_with_parent

log = logging.getLogger("kdbg.debugger")

DEFAULT_GDB = "gdb"


def _never() -> bool:
    return False


class GdbProcess:
    """One gdb with an MI channel; every call takes a timeout and none blocks beyond it."""

    def __init__(
        self,
        gdb: str = DEFAULT_GDB,
        *,
        setup: Sequence[str] = (),
        start_timeout: float = 15.0,
        on_async: Callable[[Record], None] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        path = shutil.which(gdb)
        if path is None:
            raise GdbError(f"gdb not found: {gdb!r}", hint="install gdb (apt-get install gdb)")
        self.router = Router(on_async)
        self._split = LineSplitter()
        self._console = deque[bytes](maxlen=256)
        self._token = 0
        self._dead_reason: str | None = None
        self._lock = threading.RLock()
        # While true, waiting for a reply stops: the command is interrupted in gdb (SIGINT,
        # gdb's Quit) and GdbCancelled raised, so Ctrl-C is not held up by a slow one.
        self.cancel: Callable[[], bool] = _never
        master, slave = os.openpty()
        tty.setraw(slave)
        slave_name = os.ttyname(slave)
        self._mi_fd = master
        args = ["--nx", "--quiet"]
        for cmd in (
            "set pagination off",
            "set confirm off",
            "set height 0",
            "set width 0",
            *setup,
            f"new-ui mi3 {slave_name}",
        ):
            args += ["-ex", cmd]
        try:
            argv = [*prefix, path, *args]
            # gdb dies with kdbg, even when kdbg is killed with SIGKILL.
            self.child = pexpect.spawn(
                argv[0], argv[1:], timeout=start_timeout, dimensions=(40, 160),
                preexec_fn=die_with_parent,
            )
        except pexpect.ExceptionPexpect as err:
            os.close(master)
            os.close(slave)
            raise GdbError(f"cannot start gdb: {err}") from err
        self.pid: int = self.child.pid
        try:
            # The MI UI announces itself (=thread-group-added) once it is up; until then keep
            # our slave end open, so gdb's open() of it cannot race with the pty's teardown.
            deadline = time.monotonic() + start_timeout
            while not self._pump(0.1):
                if self.dead_reason is not None or time.monotonic() > deadline:
                    raise GdbError(
                        "gdb did not start its MI interface",
                        hint=self.console_text()[-500:] or self._dead_reason,
                    )
            self.command("-gdb-set mi-async on", start_timeout)
        except BaseException:
            os.close(slave)
            self.kill()
            raise
        os.close(slave)

    # -- state ----------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._dead_reason is None and self.child.isalive()

    @property
    def dead_reason(self) -> str | None:
        if self._dead_reason is None and not self.child.isalive():
            self._dead_reason = f"gdb exited (status {self.child.exitstatus}, "
            self._dead_reason += f"signal {self.child.signalstatus})"
        return self._dead_reason

    def console_text(self) -> str:
        """The last few KB gdb printed on its console (for error messages)."""
        return b"".join(self._console).decode(errors="replace")

    # -- I/O ------------------------------------------------------------------

    def _pump(self, timeout: float, *, console: bool = True) -> list[Record]:
        """Read what gdb has written within ``timeout`` s; route MI records; drain the console
        (unless ``console`` is False: the user's terminal owns it during :meth:`interact`)."""
        with self._lock:
            fds = [self._mi_fd]
            if console and self.child.child_fd >= 0:
                fds.append(self.child.child_fd)
            try:
                ready, _, _ = select.select(fds, [], [], max(timeout, 0.0))
            except (OSError, ValueError):
                ready = []
            records: list[Record] = []
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError as err:
                    if err.errno not in (errno.EIO, errno.EBADF):
                        raise
                    data = b""
                if fd == self._mi_fd:
                    if not data:
                        self._mark_dead("gdb closed its MI channel")
                        continue
                    now = time.monotonic()
                    for line in self._split.feed(data):
                        rec = dataclasses.replace(parse_line(line), at=now)
                        log.debug("mi< %s", line)
                        records.append(rec)
                elif data:
                    self._console.append(data)
                else:
                    self._mark_dead("gdb closed its console")
            self.router.feed(records)
            if not ready and not self.child.isalive():
                self._mark_dead("gdb exited")
            return records

    def _mark_dead(self, why: str) -> None:
        if self._dead_reason is None:
            with contextlib.suppress(Exception):
                self.child.wait() if not self.child.isalive() else None
            self._dead_reason = why

    def poll(self, timeout: float = 0.0) -> None:
        """Read whatever gdb has to say for up to ``timeout`` seconds."""
        self._pump(timeout)

    def send(self, command: str) -> int:
        """Write one MI command with a fresh token; returns the token."""
        if self.dead_reason is not None:
            raise GdbDied(f"gdb is gone: {self.dead_reason}")
        with self._lock:
            self._token += 1
            token = self._token
            self.router.expect(token)
            log.debug("mi> %d%s", token, command)
            try:
                os.write(self._mi_fd, f"{token}{command}\n".encode())
            except OSError as err:
                self._mark_dead(f"cannot write to gdb: {err.strerror}")
                raise GdbDied(f"gdb is gone: {self.dead_reason}") from err
            return token

    def command(self, command: str, timeout: float = 10.0) -> Reply:
        """Run one MI command and return its result; GdbError on ``^error``, GdbTimeout."""
        token = self.send(command)
        return self.reply(token, command, timeout)

    def reply(self, token: int, command: str, timeout: float, *, keep: bool = False) -> Reply:
        """Wait for the result record of an already sent command (see :meth:`command`).
        With ``keep``, a timeout leaves the command pending, to be waited for again."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.router.take(token)
            if reply is not None:
                err = reply.record.error
                if err is not None:
                    raise GdbError(f"gdb: {command.split()[0]}: {err}")
                return reply
            if self.dead_reason is not None:
                self.router.forget(token)
                raise GdbDied(f"{self.dead_reason} while running {command.split()[0]}")
            if self.cancel():
                self.router.forget(token)
                self.quit_command()
                raise GdbCancelled(f"{command.split()[0]} abandoned: kdbg is stopping")
            left = deadline - time.monotonic()
            if left <= 0:
                if not keep:
                    self.router.forget(token)
                raise GdbTimeout(f"gdb did not answer {command.split()[0]} within {timeout:g} s")
            self._pump(min(left, 0.5))

    def quit_command(self) -> None:
        """Interrupt the command gdb is running (SIGINT: gdb's Quit). With the target
        running this also stops it, as Ctrl-C in gdb would."""
        with contextlib.suppress(OSError):
            if self.child.isalive():
                os.kill(self.pid, signal.SIGINT)

    def console(self, cli: str, timeout: float = 10.0) -> str:
        """Run a CLI command through MI and return what it printed."""
        reply = self.command(f"-interpreter-exec console {quote(cli)}", timeout)
        return reply.console

    def wait_event(self, match: Callable[[Record], bool], timeout: float) -> Record | None:
        """The next queued async record ``match`` accepts, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            rec = self.router.pop_event(match)
            if rec is not None:
                return rec
            if self.dead_reason is not None:
                raise GdbDied(self.dead_reason)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump(min(left, 0.25))

    # -- interactive ----------------------------------------------------------

    def interact(
        self,
        banner: str,
        *,
        done_marker: bytes,
        escape_character: str = "\x1d",
    ) -> str:
        """Hand the console to the user until Ctrl-] or ``done_marker`` appears; returns why.

        MI output is drained by a thread meanwhile, so gdb never blocks on a full pty.
        """
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set() and self.dead_reason is None:
                self._pump(0.2, console=False)

        class _Done(Exception):
            pass

        seen = bytearray()

        def watch(data: bytes) -> bytes:
            seen.extend(data)
            if done_marker in seen:
                raise _Done
            del seen[: max(0, len(seen) - len(done_marker))]
            return data

        thread = threading.Thread(target=drain, name="kdbg-mi-drain", daemon=True)
        thread.start()
        os.write(1, banner.encode())
        why = "escape"
        try:
            # Give the user a fresh prompt line.
            self.child.send(b"\n")
            self.child.interact(escape_character=escape_character, output_filter=watch)
        except _Done:
            why = "done"
        except OSError:
            why = "gdb-exited"
        finally:
            stop.set()
            thread.join(2)
        if not self.child.isalive():
            why = "gdb-exited"
        if os.isatty(1):
            os.write(1, b"\x1b[?2004l\r\n")  # gdb's readline left bracketed paste on
        return why

    # -- ending ---------------------------------------------------------------

    def kill(self, grace: float = 0.0) -> None:
        """Stop gdb and release its ptys: ``grace`` s to exit by itself (after
        ``-gdb-exit``), then SIGKILL. Idempotent."""
        deadline = time.monotonic() + grace
        with contextlib.suppress(Exception):
            while self.child.isalive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.child.isalive():
                self.child.kill(signal.SIGKILL)
                self.child.wait()
        with contextlib.suppress(Exception):
            self.child.ptyproc.delayafterclose = 0  # gdb is reaped already: no 0.1 s nap
            self.child.close(force=True)
        with contextlib.suppress(OSError):
            os.close(self._mi_fd)
        self._mi_fd = -1
        if self._dead_reason is None:
            self._dead_reason = "gdb was stopped by kdbg"
