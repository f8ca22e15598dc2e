"""Hardware drop events: the layout of ``bpf/hw_event.h`` mirrored, and its one decode.

A driver that supports devlink traps (mlxsw, netdevsim, ...) hands each trapped
packet to ``devlink_trap_report()``, whose tracepoint kdbg's program reads raw: the
device, the trap and its group, the input port, and the packet's addresses when the
driver set its network header. The trap's action (drop, trap, mirror) comes from
devlink's netlink interface, the way ``devlink trap show`` gets it.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdbg.hwdrops import devlink
from kdbg.trace.filters import PROTO_NAMES
from kdbg.trace.headers import IPAddress, addresses

# ctypes mirror of bpf/hw_event.h (tests/unit/test_hwdrops.py keeps them in step)
BUSLEN, DEVLEN, DRVLEN, TRAPLEN, GROUPLEN, IFNAMSIZ = 16, 32, 16, 40, 32, 16
CTR_LOST, CTR_STATS_FULL = 0, 1
NR_CTRS = 2


class RawHwEvent(ct.Structure):
    """``struct kdbg_hw_event``: only :meth:`HwDecoder.decode` touches it."""

    _fields_ = [
        ("time_ns", ct.c_uint64),
        ("cpu", ct.c_uint32),
        ("len", ct.c_uint32),
        ("trap_type", ct.c_uint32),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("family", ct.c_uint8),
        ("l4proto", ct.c_uint8),
        ("l4_valid", ct.c_uint8),
        ("pad0", ct.c_uint8),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
        ("bus", ct.c_char * BUSLEN),
        ("device", ct.c_char * DEVLEN),
        ("driver", ct.c_char * DRVLEN),
        ("trap", ct.c_char * TRAPLEN),
        ("group", ct.c_char * GROUPLEN),
        ("input_port", ct.c_char * IFNAMSIZ),
    ]


class RawHwKey(ct.Structure):
    """``struct kdbg_hw_key``."""

    _fields_ = [
        ("bus", ct.c_char * BUSLEN),
        ("device", ct.c_char * DEVLEN),
        ("trap", ct.c_char * TRAPLEN),
        ("group", ct.c_char * GROUPLEN),
        ("input_port", ct.c_char * IFNAMSIZ),
    ]



def c_text(raw: bytes) -> str:
    """A NUL-padded C string of a record, as text."""
    return raw.decode(errors="replace")


@dataclass(frozen=True)

class HwDropEvent:
    """One packet a device trapped, as kdbg reports it."""

    time_ns: int
    cpu: int
    device: str  # "bus/dev", as devlink(8) names it
    driver: str
    trap: str
    group: str
    action: str | None  # drop, trap or mirror (from netlink); None if not known
    trap_type: str  # drop, exception or control
    input_port: str | None
    len: int
    family: str | None
    proto: str | None
    saddr: IPAddress | None
    daddr: IPAddress | None
    sport: int | None
    dport: int | None

    def to_json(self) -> dict[str, Any]:
        """The documented ``{"type": "hw_drop", ...}`` record (docs/exporter.md)."""
        rec: dict[str, Any] = {"type": "hw_drop"}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            rec[name] = str(value) if isinstance(value, ipaddress._BaseAddress) else value
        return rec


class HwDecoder:
    """Raw records -> :class:`HwDropEvent`, with the trap's action from netlink."""

    def __init__(self, traps: Callable[[], dict[tuple[str, str], devlink.Trap]] = devlink.traps,
                 refresh_s: float = 2.0) -> None:
        self._traps_of = traps
        self._traps: dict[tuple[str, str], devlink.Trap] = {}
        self._read_at = -1e9
        self._refresh_s = refresh_s
        self.wall_offset_ns = time.time_ns() - time.monotonic_ns()

    def _trap(self, device: str, name: str) -> devlink.Trap | None:
        # Actions change (devlink trap set): re-read, at most every refresh_s.
        if time.monotonic() - self._read_at >= self._refresh_s:
            self._traps = self._traps_of()
            self._read_at = time.monotonic()
        return self._traps.get((device, name))

    def decode(self, raw: RawHwEvent) -> HwDropEvent:
        device = f"{c_text(raw.bus)}/{c_text(raw.device)}"
        trap = c_text(raw.trap)
        known = self._trap(device, trap)
        saddr, daddr = addresses(raw.family, raw.saddr, raw.daddr)
        return HwDropEvent(
            time_ns=raw.time_ns + self.wall_offset_ns, cpu=raw.cpu, device=device,
            driver=c_text(raw.driver), trap=trap, group=c_text(raw.group),
            action=known.action if known else None,
            trap_type=devlink.TRAP_TYPES.get(raw.trap_type, str(raw.trap_type)),
            input_port=c_text(raw.input_port) or None, len=raw.len,
            family={4: "ipv4", 6: "ipv6"}.get(raw.family),
            proto=PROTO_NAMES.get(raw.l4proto, str(raw.l4proto)) if raw.family else None,
            saddr=saddr, daddr=daddr,
            sport=raw.sport if raw.l4_valid else None, dport=raw.dport if raw.l4_valid else None,
        )
