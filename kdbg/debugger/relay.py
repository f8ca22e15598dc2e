"""A UDP relay (socat), so gdb's ``target remote udp:`` can reach QEMU's stub (TCP or Unix).

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

from kdbg.debugger.closing import Closing
from kdbg.debugger.endpoint import Endpoint
from kdbg.errors import BadInput, GdbError
from kdbg.lifetime import die_with_parent


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def socat_address(stub: Endpoint) -> str:
    """socat's address for a stub endpoint (``tcp:`` or ``unix:``)."""
    if stub.kind == "unix" and stub.path is not None:
        return f"UNIX-CONNECT:{stub.path}"
    if stub.kind == "tcp":
        return f"TCP:{stub.host}:{stub.port}"
    raise BadInput(f"cannot relay UDP to {stub}: only a tcp: or unix: stub")


class UdpRelay(Closing):
    """``socat UDP4-LISTEN:PORT,bind=HOST STUB``; ``endpoint`` is for gdb.

    ``stub`` is QEMU's stub as an endpoint (``tcp:H:P`` or ``unix:PATH``).
    """

    def __init__(self, stub: Endpoint | str, *, host: str = "127.0.0.1") -> None:
        target = socat_address(stub if isinstance(stub, Endpoint) else Endpoint.parse(stub))
        socat = shutil.which("socat")
        if socat is None:
            raise GdbError("socat not found", hint="apt-get install socat")
        self.host = host
        self.port = _free_udp_port(host)
        self.proc = subprocess.Popen(
            [socat, f"UDP4-LISTEN:{self.port},bind={host}", target],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,  # socat never outlives kdbg
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
