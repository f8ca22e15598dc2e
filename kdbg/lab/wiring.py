"""How a lab exposes each transport (:mod:`kdbg.transports`) to gdb: one row per
transport in :data:`WIRINGS`, keyed by the transport table.

QEMU's gdb stub is a Unix socket in the lab's state directory (``-gdb``); kgdboc is
the guest's second serial port (ttyS1) on such a socket, with ``kgdboc=ttyS1`` on the
kernel's command line; KGDBoE is an e1000 on a tap in the lab's own network namespace,
where gdb must run too (its UDP port has no authentication). The launch command
(:mod:`kdbg.lab.command`), the boot (:mod:`kdbg.lab.lifecycle`), a lab's record
(:mod:`kdbg.lab.registry`) and ``kdbg lab status`` ask this table instead of testing
a transport's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbg.transports import GDBSTUB, KGDBOC, KGDBOE, Transport, by_name

KGDBOC_TTY = "ttyS1"
KGDBOE_UDP_PORT = 31337


@dataclass(frozen=True)
class Wiring:
    """One transport as a lab wires it. ``socket``: the file name of the Unix socket
    QEMU serves it on, in the state directory, and ``endpoint_kind`` the kdbg endpoint
    kind that names it (``unix:PATH``, ``serial:PATH``); ``qemu_gdb``: that socket is
    QEMU's own gdb stub (``-gdb``); ``on_serial``: it is the guest's ttyS1 (else ttyS1
    goes nowhere); ``kernel_options``: what the guest's
    command line needs; ``own_netns``: a tap in the lab's own network namespace, where
    gdb runs (``udp:IP:PORT``), and a module the user loads (``kdbg lab kgdboe-load``)."""

    transport: Transport
    socket: str | None = None
    record: str | None = None  # the field of a lab's record (LabInfo) that keeps its path
    endpoint_kind: str = "udp"
    qemu_gdb: bool = False
    on_serial: bool = False
    kernel_options: tuple[str, ...] = ()
    own_netns: bool = False

    def endpoint(self, socket_path: str | None, guest_ip: str | None) -> str:
        """kdbg's endpoint for a lab wired so (its socket's path, or its guest's IP)."""
        if self.socket is not None:
            return f"{self.endpoint_kind}:{socket_path}"
        return f"udp:{guest_ip}:{KGDBOE_UDP_PORT}"


WIRINGS: dict[Transport, Wiring] = {
    GDBSTUB: Wiring(GDBSTUB, socket="gdb.sock", record="gdb_socket", endpoint_kind="unix",
                    qemu_gdb=True),
    KGDBOC: Wiring(KGDBOC, socket="kgdboc.sock", record="kgdboc_socket",
                   endpoint_kind="serial", on_serial=True,
                   kernel_options=(f"kgdboc={KGDBOC_TTY},115200",)),
    KGDBOE: Wiring(KGDBOE, own_netns=True),
}


def wiring(transport: str) -> Wiring:
    """The lab's wiring of ``transport`` (a name); BadInput for an unknown one."""
    return WIRINGS[by_name(transport)]


def sockets_recorded(transport: str, socket: Path | None) -> dict[str, Any]:
    """The socket fields of a lab's record (LabInfo) for a lab of ``transport`` whose
    socket is ``socket``: its own field set, every other wiring's None."""
    own = wiring(transport)
    return {w.record: (str(socket) if w is own and socket else None)
            for w in WIRINGS.values() if w.record}
