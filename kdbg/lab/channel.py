"""Host side of the exec channel: TCP to the guest agent through QEMU's ``hostfwd``.

See :mod:`kdbg.lab.protocol` for the protocol. The port is on 127.0.0.1, where any local
user can connect; what keeps them out is the lab's exec key, sent first on every
connection (:class:`ExecAccess`). Reads have no timeout unless the caller
asks for one: while a debugger holds the guest stopped, QEMU's user-mode network
stack (whose timers run on the guest's virtual clock) simply stops delivering, and
the stream resumes when the guest does.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kdbg.errors import BadInput, LabLost, LabTimeout
from kdbg.lab import protocol

Sink = Callable[[bytes], None]


@dataclass(frozen=True)
class ExecAccess:
    """How to reach a lab's agent: the forwarded port and the lab's exec key."""

    port: int
    key: bytes = field(repr=False)


def ping(access: ExecAccess, timeout: float = 2.0) -> dict[str, Any]:
    """Ask the agent for guest facts (release, boot_id, cmdline, tracefs, headers).

    Raises OSError (or LabTimeout) when the agent does not answer in ``timeout``.
    """
    with socket.create_connection(("127.0.0.1", access.port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(protocol.opening(access.key, protocol.PING))
        try:
            frame = protocol.recv_frame(sock)
        except TimeoutError as err:
            raise LabTimeout(f"the guest agent on port {access.port} did not answer") from err
        if frame is None or frame[0] != protocol.PING:
            raise ConnectionError("the guest agent closed the connection")
        facts: dict[str, Any] = dict(protocol.decode_facts(frame[1]))
        for key in ("tracefs", "headers"):
            facts[key] = facts.get(key) == "1"
        return facts


@dataclass
class Chunk:
    """A piece of the remote command's output: ``stream`` is "stdout" or "stderr"."""

    stream: str
    data: bytes


class ExecSession:
    """A command running in the guest. Iterate it for output chunks; then read ``status``.

    ``send_stdin``, ``close_stdin`` and ``signal`` may be called from another thread
    while one thread iterates. ``close()`` (or leaving the ``with`` block) drops the
    connection, which makes the agent kill the command's process group.
    """

    def __init__(
        self,
        access: ExecAccess,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str = "/",
        stdin: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.argv = argv
        self.status: int | None = None
        self._lock = threading.Lock()
        try:
            self._sock = socket.create_connection(("127.0.0.1", access.port), timeout=10)
        except OSError as err:
            raise LabLost(f"cannot reach the lab's exec port {access.port}: {err}") from err
        self._sock.settimeout(timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            request = protocol.encode_run(argv, env or {}, cwd, stdin)
        except ValueError as err:
            self.close()
            raise BadInput(str(err)) from err
        with self._lock:
            try:
                self._sock.sendall(protocol.opening(access.key, protocol.RUN, request))
            except OSError as err:
                raise LabLost(f"lost the exec channel: {err}") from err

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        with self._lock:
            try:
                protocol.send_frame(self._sock, kind, payload)
            except OSError as err:
                raise LabLost(f"lost the exec channel: {err}") from err

    def send_stdin(self, data: bytes) -> None:
        """Feed bytes to the remote command's stdin (opened with ``stdin=True``)."""
        for i in range(0, len(data), 1 << 16):
            self._send(protocol.STDIN, data[i : i + (1 << 16)])

    def close_stdin(self) -> None:
        """End the remote command's stdin."""
        self._send(protocol.STDIN_EOF)

    def signal(self, sig: int) -> None:
        """Send signal ``sig`` to the remote command's process group."""
        self._send(protocol.SIGNAL, str(int(sig)).encode())

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            try:
                frame = protocol.recv_frame(self._sock)
            except TimeoutError as err:
                raise LabTimeout(f"{self.argv[0]} in the lab did not finish in time") from err
            except OSError as err:
                raise LabLost(f"lost the exec channel: {err}") from err
            if frame is None:
                raise LabLost("the lab closed the exec channel (did its QEMU die?)")
            kind, payload = frame
            if kind == protocol.STDOUT:
                yield Chunk("stdout", payload)
            elif kind == protocol.STDERR:
                yield Chunk("stderr", payload)
            elif kind == protocol.EXIT:
                self.status = int(payload)
                return

    def close(self) -> None:
        # shutdown() first: it wakes a thread blocked reading this socket (close() alone
        # does not), so a reader thread can be joined at once.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> ExecSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_streaming(
    access: ExecAccess,
    argv: list[str],
    *,
    stdout: Sink,
    stderr: Sink,
    stdin: BinaryIO | bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: str = "/",
    timeout: float | None = None,
    forward_sigint: bool = True,
) -> int:
    """Run ``argv`` in the guest, handing output to ``stdout``/``stderr`` as it arrives.

    Returns the command's exit status. On KeyboardInterrupt the remote command gets
    SIGINT and its output keeps flowing until it exits; a second KeyboardInterrupt
    drops the connection (the agent then kills it) and re-raises. With
    ``forward_sigint=False`` (kdbg's own short commands) Ctrl-C is left to the caller:
    KeyboardInterrupt drops the connection at once.
    """
    with ExecSession(access, argv, env=env, cwd=cwd, stdin=stdin is not None,
                     timeout=timeout) as s:
        feeder = None
        if isinstance(stdin, bytes):
            s.send_stdin(stdin)
            s.close_stdin()
        elif stdin is not None:
            feeder = threading.Thread(target=_feed, args=(s, stdin), daemon=True)
            feeder.start()
        presses = 0

        def on_sigint(signum: int, frame: object) -> None:
            nonlocal presses
            presses += 1
            if presses > 1:
                raise KeyboardInterrupt
            s.signal(signal.SIGINT)

        in_main = forward_sigint and threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
        try:
            for chunk in s:
                (stdout if chunk.stream == "stdout" else stderr)(chunk.data)
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        assert s.status is not None
        return s.status


def _feed(session: ExecSession, stream: BinaryIO) -> None:
    try:
        while True:
            data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not data:
                break
            session.send_stdin(data)
        session.close_stdin()
    except (OSError, LabLost):
        pass
