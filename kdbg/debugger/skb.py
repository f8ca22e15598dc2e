"""Reading the sk_buff at a drop site through gdb.

At the call to the drop function the skb is still alive. With the target's
DWARF vmlinux loaded, gdb knows ``struct sk_buff``; kdbg reads the few fields
it needs with expressions, then the L3/L4 headers as raw bytes, and decodes
those here.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Any

from kdbg.debugger.inspection import Inspection
from kdbg.errors import GdbError
from kdbg.trace.filters import PROTO_NAMES

# Which argument carries the skb, per drop function.
SKB_ARG = {
    "kfree_skb_reason": 0,   # (skb, reason)
    "kfree_skb": 0,          # (skb)
    "kfree_skb_list_reason": 0,
    "sk_skb_reason_drop": 1,  # (sk, skb, reason), from 6.11
}

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
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (f"0x{v:x}" if k == "address" else v) for k, v in self.__dict__.items()
                if v is not None}

    def summary(self) -> str:
        parts = [f"skb 0x{self.address:x}"]
        if self.len is not None:
            parts.append(f"len {self.len}")
        if self.ifname:
            parts.append(f"dev {self.ifname}")
        if self.saddr:
            src = f"{self.saddr}:{self.sport}" if self.sport is not None else self.saddr
            dst = f"{self.daddr}:{self.dport}" if self.dport is not None else str(self.daddr)
            parts.append(f"{self.proto or '?'} {src} -> {dst}")
        if self.note:
            parts.append(f"({self.note})")
        return ", ".join(parts)


def parse_headers(data: bytes, ethertype: int) -> dict[str, Any]:
    """Addresses, protocol and ports from the bytes at the network header."""
    out: dict[str, Any] = {}
    if len(data) >= 20 and (ethertype == 0x0800 or (ethertype == 0 and data[0] >> 4 == 4)):
        ihl = (data[0] & 0x0F) * 4
        proto = data[9]
        out.update(family="ipv4", proto=PROTO_NAMES.get(proto, str(proto)),
                   saddr=str(ipaddress.IPv4Address(data[12:16])),
                   daddr=str(ipaddress.IPv4Address(data[16:20])))
        frag = struct.unpack(">H", data[6:8])[0] & 0x1FFF
        l4 = data[ihl:] if frag == 0 else b""
    elif len(data) >= 40 and (ethertype == 0x86DD or (ethertype == 0 and data[0] >> 4 == 6)):
        proto = data[6]
        out.update(family="ipv6", proto=PROTO_NAMES.get(proto, str(proto)),
                   saddr=str(ipaddress.IPv6Address(data[8:24])),
                   daddr=str(ipaddress.IPv6Address(data[24:40])))
        l4 = data[40:]
    else:
        return out
    if proto in (6, 17, 132) and len(l4) >= 4:
        out["sport"], out["dport"] = struct.unpack(">HH", l4[:4])
    return out


def _value(inspect: Inspection, expr: str) -> str:
    # The first use of struct sk_buff makes gdb expand its DWARF: slow on a big vmlinux.
    return inspect.evaluate(expr, timeout=120)


def _int(text: str) -> int:
    m = _HEX.search(text)
    return int(m.group(0), 16) if m else int(text.split()[0])


def read_skb(inspect: Inspection, callee: str) -> SkbInfo | None:
    """The skb passed to ``callee`` at a stop on the call to it (read through the
    session's ``inspect``); None if not a drop call."""
    index = SKB_ARG.get(callee)
    if index is None:
        return None
    addr = inspect.read_args(index + 1)[index]
    if inspect.state.vmlinux is None:
        return SkbInfo(addr, note="no DWARF vmlinux: fields not read")
    skb = f"((struct sk_buff *)0x{addr:x})"
    try:
        length = _int(_value(inspect, f"{skb}->len"))
        head = _int(_value(inspect, f"(unsigned long){skb}->head"))
        nh = _int(_value(inspect, f"{skb}->network_header"))
        proto = _int(_value(inspect, f"{skb}->protocol"))
        dev = _int(_value(inspect, f"(unsigned long){skb}->dev"))
        ifname = None
        if dev:
            raw = _value(inspect, f"((struct net_device *)0x{dev:x})->name")
            m = re.match(r'"([^"]*)"', raw)
            ifname = m.group(1) if m else None
        ethertype = ((proto & 0xFF) << 8) | (proto >> 8)  # __be16 as read on x86
        fields: dict[str, Any] = {}
        if head and nh != 0xFFFF:
            fields = parse_headers(inspect.read_memory(head + nh, 64), ethertype)
        return SkbInfo(addr, len=length, ifname=ifname, **fields)
    except (GdbError, ValueError) as err:
        return SkbInfo(addr, note=f"could not read the skb: {err}")
