"""A packet's network and transport headers, decoded from the bytes at its network
header: what ``watch --break`` reads of a stopped skb (:mod:`kdbg.debugger.skb`) and
what gdb's ``kdbg-skb`` prints (:mod:`kdbg.prompt.skbview`)."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from kdbg.trace.filters import PROTO_NAMES


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
