"""The sk_buff at a drop site.

At the call to the drop function the skb is still alive, and its address is in the
argument register (:func:`skb_address`: one register read). A stop reads its fields
through gdb: with a layout gdb gave once, as raw memory
(:mod:`kdbg.debugger.skblayout`), or else with expressions (:func:`read_skb`): with the
target's DWARF vmlinux loaded, gdb knows ``struct sk_buff``, kdbg reads the few fields
it needs, then the L3/L4 headers as raw bytes, which
:func:`kdbg.trace.headers.parse_headers` decodes. The tracer's record of that very drop
(:meth:`SkbInfo.from_drop`, read at the tracepoint the call leads to) then confirms the
read (:meth:`SkbInfo.differences`).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from kdbg.debugger.inspection import Inspection
from kdbg.errors import GdbError
from kdbg.symbols.dropargs import DROP_ARGS
from kdbg.trace.event import DropEvent
from kdbg.trace.headers import parse_headers

_HEX = re.compile(r"0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class SkbInfo:
    """What kdbg could read of the skb at a stop (None where it could not)."""

    address: int
    len: int | None = None
    ifname: str | None = None
    family: str | None = None
    proto: str | None = None
    saddr: str | None = None
    daddr: str | None = None
    sport: int | None = None
    dport: int | None = None
    netns: int | None = None  # the device's network namespace (its inode number)
    note: str | None = None

    @classmethod
    def from_drop(cls, address: int, event: DropEvent) -> SkbInfo:
        """The skb at ``address`` as the tracer read it at the tracepoint when it was
        dropped (``event``, whose ``skb`` is that address)."""
        return cls(address, len=event.len, ifname=event.ifname, family=event.family,
                   proto=event.proto,
                   saddr=str(event.saddr) if event.saddr is not None else None,
                   daddr=str(event.daddr) if event.daddr is not None else None,
                   sport=event.sport, dport=event.dport, netns=event.netns)

    def differences(self, other: SkbInfo) -> list[str]:
        """The fields both know that differ (``"len 31 != 32"``), for two reads of one
        skb: gdb's at the stop and the tracer's at the drop."""
        out = []
        for key in ("len", "ifname", "proto", "saddr", "daddr", "sport", "dport", "netns"):
            a, b = getattr(self, key), getattr(other, key)
            if a is not None and b is not None and a != b:
                out.append(f"{key} {a} != {b}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {k: (f"0x{v:x}" if k == "address" else v) for k, v in self.__dict__.items()
                if v is not None}

    def summary(self) -> str:
        parts = [f"skb 0x{self.address:x}"]
        if self.len is not None:
            parts.append(f"len {self.len}")
        if self.ifname:
            parts.append(f"dev {self.ifname}")
        if self.netns is not None:
            parts.append(f"netns {self.netns}")
        if self.saddr:
            src = f"{self.saddr}:{self.sport}" if self.sport is not None else self.saddr
            dst = f"{self.daddr}:{self.dport}" if self.dport is not None else str(self.daddr)
            parts.append(f"{self.proto or '?'} {src} -> {dst}")
        if self.note:
            parts.append(f"({self.note})")
        return ", ".join(parts)


def _value(inspect: Inspection, expr: str) -> str:
    # The first use of struct sk_buff makes gdb expand its DWARF: slow on a big vmlinux.
    return inspect.evaluate(expr, timeout=120)


def _int(text: str) -> int:
    m = _HEX.search(text)
    return int(m.group(0), 16) if m else int(text.split()[0])


def skb_address(inspect: Inspection, callee: str) -> int | None:
    """The address of the skb passed to ``callee`` at a stop on the call to it; None if
    ``callee`` is no drop function."""
    args = DROP_ARGS.get(callee)
    if args is None:
        return None
    index = args[0]
    return inspect.read_args(index + 1)[index]


def read_reason(inspect: Inspection, callee: str) -> str | None:
    """The drop reason passed to ``callee`` at a stop on the call to it, by its name
    without ``SKB_DROP_REASON_`` (as the tracer names it), from the vmlinux's DWARF
    enum; None when ``callee`` takes no reason or gdb cannot name it."""
    args = DROP_ARGS.get(callee)
    if args is None or args[1] is None or inspect.state.vmlinux is None:
        return None
    code = inspect.read_args(args[1] + 1)[args[1]] & 0xFFFF_FFFF
    try:
        name = inspect.evaluate(f"(enum skb_drop_reason){code}")
    except GdbError:
        return None
    return name.removeprefix("SKB_DROP_REASON_") if name.startswith("SKB_DROP_") else None


def read_skb(inspect: Inspection, callee: str) -> SkbInfo | None:
    """The skb passed to ``callee`` at a stop on the call to it (read through the
    session's ``inspect``); None if not a drop call."""
    addr = skb_address(inspect, callee)
    if addr is None:
        return None
    if inspect.state.vmlinux is None:
        return SkbInfo(addr, note="no DWARF vmlinux: fields not read")
    skb = f"((struct sk_buff *)0x{addr:x})"
    try:
        length = _int(_value(inspect, f"{skb}->len"))
        head = _int(_value(inspect, f"(unsigned long){skb}->head"))
        nh = _int(_value(inspect, f"{skb}->network_header"))
        proto = _int(_value(inspect, f"{skb}->protocol"))
        dev = _int(_value(inspect, f"(unsigned long){skb}->dev"))
        ifname = netns = None
        if dev:
            raw = _value(inspect, f"((struct net_device *)0x{dev:x})->name")
            m = re.match(r'"([^"]*)"', raw)
            ifname = m.group(1) if m else None
            with contextlib.suppress(GdbError, ValueError):  # a kernel without net ns
                netns = _int(_value(inspect,
                                    f"((struct net_device *)0x{dev:x})->nd_net.net->ns.inum"))
        ethertype = ((proto & 0xFF) << 8) | (proto >> 8)  # __be16 as read on x86
        fields: dict[str, Any] = {}
        if head and nh != 0xFFFF:
            fields = parse_headers(inspect.read_memory(head + nh, 64), ethertype)
        return SkbInfo(addr, len=length, ifname=ifname, netns=netns, **fields)
    except (GdbError, ValueError) as err:
        return SkbInfo(addr, note=f"could not read the skb: {err}")
