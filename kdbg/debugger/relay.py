"""A UDP relay to QEMU's stub (TCP or Unix), so gdb's ``target remote udp:`` reaches it.

This exercises gdb's UDP transport (the one KGDBoE uses) end to end in the lab. It is
not KGDBoE, but it answers as KGDBoE does: to the sender of the last datagram (kdbg's
probe asks from a socket of its own before gdb attaches; see
:mod:`kdbg.debugger.kgdbprobe`). One stream connection to the stub carries every
datagram, as one gdb connection would.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from kdbg.debugger.closing import Closing
from kdbg.debugger.endpoint import Endpoint
from kdbg.errors import BadInput, GdbError


def stub_socket(stub: Endpoint) -> socket.socket:
    """A connected stream socket to ``stub`` (``tcp:`` or ``unix:``)."""
    if not stub.transport.relayed:
        raise BadInput(f"cannot relay UDP to {stub}: only a tcp: or unix: stub")
    if stub.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        where: str | tuple[str, int] = stub.path
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in stub.host else socket.AF_INET)
        where = (stub.host, stub.port)
    sock.settimeout(5)
    try:
        sock.connect(where)
    except OSError as err:
        sock.close()
        raise GdbError(f"cannot reach the stub at {stub}: {err}") from err
    sock.settimeout(None)
    return sock


class UdpRelay(Closing):
    """Datagrams to ``endpoint`` (``udp:HOST:PORT``, a free port) go to ``stub``; the
    stub's bytes go back to the last datagram's sender. A thread of kdbg's own does it,
    until :meth:`close` (or the stub closing its end)."""

    def __init__(self, stub: Endpoint | str, *, host: str = "127.0.0.1") -> None:
        self._stream = stub_socket(stub if isinstance(stub, Endpoint) else Endpoint.parse(stub))
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((host, 0))
        self.host, self.port = host, int(self._udp.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="kdbg-udp-relay", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"udp:{self.host}:{self.port}"

    def _pump(self) -> None:
        peer = None
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ)
            sel.register(self._stream, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    try:
                        if key.fileobj is self._udp:
                            data, peer = self._udp.recvfrom(65536)
                            self._stream.sendall(data)
                            continue
                        data = self._stream.recv(65536)
                        if not data:
                            return  # the stub went away: gdb then times out
                        if peer is not None:
                            self._udp.sendto(data, peer)
                    except OSError:
                        return

    def close(self) -> None:
        """Stop the relay's thread and close both sockets."""
        self._stop.set()
        self._thread.join(5)
        for sock in (self._udp, self._stream):
            with contextlib.suppress(OSError):
                sock.close()
