"""A UDP-to-TCP relay (socat), so gdb's ``target remote udp:`` can reach QEMU's TCP stub.

This exercises gdb's UDP transport (the one KGDBoE uses) end to end in the lab. It is
not KGDBoE. socat runs without ``fork``: with it, every datagram opens a new TCP
connection and the session breaks.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from types import TracebackType

from kdbg.errors import GdbError


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class UdpRelay:
    """``socat UDP4-LISTEN:PORT,bind=HOST TCP:TCP_HOST:TCP_PORT``; ``endpoint`` is for gdb."""

    def __init__(self, tcp_host: str, tcp_port: int, *, host: str = "127.0.0.1") -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise GdbError("socat not found", hint="apt-get install socat")
        self.host = host
        self.port = _free_udp_port(host)
        self.proc = subprocess.Popen(
            [socat, f"UDP4-LISTEN:{self.port},bind={host}", f"TCP:{tcp_host}:{tcp_port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.2)
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise GdbError(f"socat exited at once: {err.strip()}")

    @property
    def endpoint(self) -> str:
        return f"udp:{self.host}:{self.port}"

    def close(self) -> None:
        """Stop socat (our own PID only)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            with contextlib.suppress(OSError):
                self.proc.stderr.close()

    def __enter__(self) -> UdpRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
