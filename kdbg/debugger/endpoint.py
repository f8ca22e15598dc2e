"""Where gdb reaches the target kernel, and what that transport allows.

``tcp:HOST:PORT`` or ``unix:PATH``
    QEMU's gdb stub, on TCP or on a Unix socket (a lab's stub is a socket in its state
    directory, mode 0700, so only the lab's owner reaches it). Interrupt with Ctrl-C
    (0x03); breakpoints are kept by QEMU, outside guest memory.
``serial:HOST:PORT``, ``serial:PATH`` or ``/dev/ttyXXX``
    kgdb over a serial line (kgdboc): a serial port exposed on TCP, a QEMU serial port on
    a Unix socket (``serial:/…/kgdboc.sock``; a PATH under ``/dev/`` is a tty), or a real
    tty. kgdb is deaf while the kernel runs: interrupting it takes SysRq-G in the target.
``udp:HOST:PORT``
    KGDBoE (or, in tests, a UDP relay to QEMU's stub). 0x03 interrupts.

What each transport allows is in :mod:`kdbg.transports`; ``Endpoint.transport`` finds an
endpoint's there by its kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdbg.errors import BadInput
from kdbg.transports import KINDS, Interrupt, Transport

ENDPOINT_FORMS = ("tcp:HOST:PORT, unix:PATH, serial:HOST:PORT, serial:PATH, udp:HOST:PORT "
                  "or /dev/ttyS*")


@dataclass(frozen=True)
class Endpoint:
    """A parsed gdb endpoint. ``kind`` is tcp, unix, serial or udp; ``device`` for a tty
    path, ``path`` for a Unix socket (``unix``, or ``serial`` on a socket)."""

    kind: str
    host: str = ""
    port: int = 0
    device: str | None = None
    baud: int = 115200
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse one of the forms in the module docstring."""
        text = text.strip()
        if text.startswith("/"):
            return cls("serial", device=text)
        for kind in ("unix", "serial"):
            rest = text.removeprefix(f"{kind}:")
            if rest != text and rest.startswith("/"):
                if kind == "serial" and rest.startswith("/dev/"):
                    return cls("serial", device=rest)
                return cls(kind, path=rest)
        m = re.fullmatch(r"(tcp|serial|udp):(\[[^\]]+\]|[^:]+):(\d{1,5})", text)
        if m is None:
            raise BadInput(f"cannot parse gdb endpoint {text!r}", hint=f"use {ENDPOINT_FORMS}")
        port = int(m[3])
        if not 0 < port < 65536:
            raise BadInput(f"port {port} out of range in {text!r}")
        return cls(m[1], m[2].strip("[]"), port)

    @property
    def transport(self) -> Transport:
        """The transport this endpoint reaches (its ``name`` is the safety guard's:
        gdbstub, kgdboc or kgdboe)."""
        return KINDS[self.kind]

    @property
    def gdb_target(self) -> str:
        """The argument of gdb's ``target remote``."""
        if self.device is not None:
            return self.device
        if self.path is not None:
            return self.path  # gdb opens a Unix socket given as a plain path
        proto = "udp" if self.kind == "udp" else "tcp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{proto}:{host}:{self.port}"

    @property
    def can_break_in(self) -> bool:
        """Whether gdb's Ctrl-C (0x03) stops a running target over this transport."""
        return self.transport.interrupt is Interrupt.BREAK_IN

    def __str__(self) -> str:
        if self.device is not None:
            return self.device
        if self.path is not None:
            return f"{self.kind}:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}:{host}:{self.port}"
