"""Where a break-watch's drop events come from: ``kdbg watch --json`` over any pipe.

The tracer runs where the packets are (a lab guest, or a real machine over
ssh) and prints JSON lines; this side turns them back into
:class:`kdbg.trace.event.DropEvent`. A reader thread feeds a queue, so the
caller can wait on events and on a debugger at the same time.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdbg import lab
from kdbg.breakwatch.model import BreakConfig
from kdbg.drops import WatchConfig, guest_watch_argv
from kdbg.errors import KdbgError
from kdbg.trace.event import DropEvent

READY = "kdbg: watching"
STOP_WAIT = 1.0  # s a stopped tracer has to print its summary (Ctrl-C ends kdbg in 2 s)


class EventStreamError(KdbgError):
    """The event source failed or ended before it was ready."""


@dataclass(frozen=True)
class Item:
    """One thing from the source: ``kind`` is drop, record, stderr, ready or end."""

    kind: str
    drop: DropEvent | None = None
    record: dict[str, Any] | None = None
    text: str = ""
    status: int | None = None
    at: float = 0.0  # time.monotonic() when its line arrived (0.0: made here, not read)


class EventStream:
    """Parses a byte stream of JSON lines (stdout) and text (stderr) into items."""

    def __init__(self) -> None:
        self.items: queue.Queue[Item] = queue.Queue()
        self._buf = {"stdout": b"", "stderr": b""}
        self.ready = threading.Event()
        self.stderr_tail: list[str] = []

    def feed(self, stream: str, data: bytes) -> None:
        at = time.monotonic()
        buf = self._buf[stream] + data
        *lines, self._buf[stream] = buf.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip("\r")
            if stream == "stdout":
                self._stdout_line(line, at)
            else:
                self._stderr_line(line)

    def _stdout_line(self, line: str, at: float = 0.0) -> None:
        if not line.strip():
            return
        try:
            rec = json.loads(line)
        except ValueError:
            self.items.put(Item("stderr", text=f"(not JSON) {line}"))
            return
        if rec.get("type") == "drop":
            self.items.put(Item("drop", drop=DropEvent.from_json(rec), record=rec, at=at))
        else:
            self.items.put(Item("record", record=rec, at=at))

    def _stderr_line(self, line: str) -> None:
        self.stderr_tail = (self.stderr_tail + [line])[-20:]
        if line.startswith(READY) and not self.ready.is_set():
            self.ready.set()
            self.items.put(Item("ready", text=line))
        else:
            self.items.put(Item("stderr", text=line))

    def end(self, status: int | None) -> None:
        for stream in ("stdout", "stderr"):
            if self._buf[stream]:
                self.feed(stream, b"\n")
        self.items.put(Item("end", status=status))

    def error_summary(self) -> str:
        lines = [ln for ln in self.stderr_tail if ln.strip()]
        return lines[-1] if lines else "no output"


class CommandSource:
    """A local shell command (``ssh root@target kdbg watch --json …``) as the source."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.stream = EventStream()
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> EventStream:
        self._proc = subprocess.Popen(
            self.command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )
        pipes = {"stdout": self._proc.stdout, "stderr": self._proc.stderr}
        for name, pipe in pipes.items():
            t = threading.Thread(target=self._pump, args=(name, pipe), daemon=True)
            t.start()
            self._threads.append(t)
        threading.Thread(target=self._wait, daemon=True).start()
        return self.stream

    def _pump(self, name: str, pipe: Any) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            self.stream.feed(name, chunk)

    def _wait(self) -> None:
        assert self._proc is not None
        status = self._proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        self.stream.end(status)

    def stop(self, wait: float = STOP_WAIT) -> None:
        """SIGINT the command's process group (the remote tracer prints its summary),
        then SIGKILL if it does not go within ``wait`` s."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class LabSource:
    """``kdbg watch --json …`` run inside a lab guest over the lab's exec channel."""

    def __init__(self, lab_name: str, argv: list[str]) -> None:
        self.lab_name = lab_name
        self.argv = argv
        self.stream = EventStream()
        self._session: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> EventStream:
        self._session = lab.stream(self.lab_name, self.argv)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        return self.stream

    def _pump(self) -> None:
        status: int | None = None
        try:
            for chunk in self._session:
                self.stream.feed(chunk.stream, chunk.data)
            status = self._session.status
        except KdbgError as err:
            self.stream.feed("stderr", f"kdbg: error: {err}\n".encode())
            status = 1  # the channel failed: never report that as success
        finally:
            self.stream.end(status)

    def stop(self, wait: float = STOP_WAIT) -> None:
        """SIGINT the guest's tracer so it prints its summary; after ``wait`` s drop the
        channel (the lab's agent kills whatever is left)."""
        if self._session is None:
            return
        with contextlib.suppress(KdbgError, OSError):
            self._session.signal(signal.SIGINT)
        if self._thread is not None:
            self._thread.join(timeout=wait)
        self._session.close()


Source = CommandSource | LabSource


def source_for(cfg: BreakConfig, watch: WatchConfig, *, stacks: bool = False) -> Source:
    """The source ``cfg`` names: ``--events-cmd``, else the lab's own tracer run with
    ``watch``'s filters (and ``--stack`` when ``stacks``: the stopped skb's ORC stack,
    for the hit report)."""
    if cfg.events_cmd is not None:
        return CommandSource(cfg.events_cmd)
    return LabSource(cfg.lab or "default", guest_watch_argv(watch, "--json", stack=stacks))


def wait_ready(stream: EventStream, timeout: float,
               on_item: Callable[[Item], None] | None = None,
               stop: Callable[[], bool] = lambda: False) -> bool:
    """Block until the remote tracer says it is watching (True), or until ``stop()``
    is true (False, within 0.2 s); EventStreamError if the tracer ends first.

    stdout and stderr arrive through separate pipes, so records may overtake the
    ready line: every other item is handed to ``on_item`` (stderr text is also kept
    in ``stream.stderr_tail`` for error messages).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop():
            return False
        try:
            item = stream.items.get(timeout=0.2)
        except queue.Empty:
            continue
        if item.kind == "ready":
            return True
        if item.kind == "end":
            raise EventStreamError(
                f"the tracer ended before it was ready: {stream.error_summary()}")
        if on_item is not None:
            on_item(item)
    raise EventStreamError(f"the tracer was not ready within {timeout:.0f} s: "
                           f"{stream.error_summary()}")
