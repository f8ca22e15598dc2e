"""Where gdb reaches the target kernel, and what that transport allows.

``tcp:HOST:PORT``
    QEMU's gdb stub. Interrupt with Ctrl-C (0x03); breakpoints are kept by QEMU, outside
    guest memory.
``serial:HOST:PORT`` or ``/dev/ttyXXX``
    kgdb over a serial line (kgdboc), here a QEMU serial port exposed on TCP, or a real
    tty. kgdb is deaf while the kernel runs: interrupting it takes SysRq-G in the target.
``udp:HOST:PORT``
    KGDBoE (or, in tests, a UDP relay to QEMU's stub). 0x03 interrupts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdbg.errors import BadInput

TRANSPORTS = {"tcp": "gdbstub", "serial": "kgdboc", "udp": "kgdboe"}


@dataclass(frozen=True)
class Endpoint:
    """A parsed gdb endpoint. ``kind`` is tcp, serial or udp; ``device`` for a tty path."""

    kind: str
    host: str = ""
    port: int = 0
    device: str | None = None
    baud: int = 115200

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``tcp:H:P``, ``serial:H:P``, ``udp:H:P`` or a device path like ``/dev/ttyS1``."""
        text = text.strip()
        if text.startswith("/"):
            return cls("serial", device=text)
        m = re.fullmatch(r"(tcp|serial|udp):(\[[^\]]+\]|[^:]+):(\d{1,5})", text)
        if m is None:
            raise BadInput(
                f"cannot parse gdb endpoint {text!r}",
                hint="use tcp:HOST:PORT, serial:HOST:PORT, udp:HOST:PORT or /dev/ttyS*",
            )
        port = int(m[3])
        if not 0 < port < 65536:
            raise BadInput(f"port {port} out of range in {text!r}")
        return cls(m[1], m[2].strip("[]"), port)

    @property
    def transport(self) -> str:
        """The safety guard's name for this transport: gdbstub, kgdboc or kgdboe."""
        return TRANSPORTS[self.kind]

    @property
    def gdb_target(self) -> str:
        """The argument of gdb's ``target remote``."""
        if self.device is not None:
            return self.device
        proto = "udp" if self.kind == "udp" else "tcp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{proto}:{host}:{self.port}"

    @property
    def can_break_in(self) -> bool:
        """Whether gdb's Ctrl-C (0x03) stops a running target over this transport."""
        return self.kind in ("tcp", "udp")

    def __str__(self) -> str:
        if self.device is not None:
            return self.device
        return f"{self.kind}:{self.host}:{self.port}"
