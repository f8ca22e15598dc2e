"""Dropped packets as pcapng, each with a comment naming its drop.

Written from the specification (IETF draft-ietf-opsawg-pcapng): a Section Header
Block, one Interface Description Block per (link type, interface, namespace), and an
Enhanced Packet Block per drop whose ``opt_comment`` gives the reason, location,
file:line, namespace and interface. Timestamps are in nanoseconds (``if_tsresol``
9). No PyPI writer fitted: python-pcapng and dpkt have seen no release since 2022,
and scapy's writer costs tens of microseconds a packet.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from kdbg import __version__
from kdbg.record import layout
from kdbg.record.offline import Offline, RecordedDrop
from kdbg.record.recfile import io_error
from kdbg.trace.event import DropEvent

SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET, LINKTYPE_RAW = 1, 101
OPT_END, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9
LINKTYPES = {layout.LINK_ETHERNET: LINKTYPE_ETHERNET, layout.LINK_RAW: LINKTYPE_RAW}


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _options(opts: Iterable[tuple[int, bytes]]) -> bytes:
    out = b"".join(struct.pack("<HH", code, len(value)) + _pad(value) for code, value in opts)
    return out + struct.pack("<HH", OPT_END, 0) if out else b""


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def comment(ev: DropEvent, netns_names: dict[int, str]) -> str:
    """``NETFILTER_DROP at nft_do_chain+0x2e4 [nf_tables] (file:line), netns N (name),
    interface veth-b``."""
    text = f"{ev.reason} at {ev.location}"
    if ev.file:
        text += f" ({ev.file}:{ev.line})" if ev.line else f" ({ev.file})"
    if ev.netns:
        name = netns_names.get(ev.netns)
        text += f", netns {ev.netns}" + (f" ({name})" if name else "")
    text += f", interface {ev.ifname}" if ev.ifname else ", no interface"
    return text


class PcapngWriter:
    """A pcapng stream on ``f``: interfaces are described as packets first need them."""

    def __init__(self, f: BinaryIO, snaplen: int) -> None:
        self.f = f
        self.snaplen = snaplen
        self._ifaces: dict[tuple[int, str, int], int] = {}
        body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
        body += _options([(SHB_USERAPPL, f"kdbg {__version__}".encode())])
        f.write(_block(SHB, body))

    def _iface(self, linktype: int, ifname: str, netns: int) -> int:
        key = (linktype, ifname, netns)
        if key not in self._ifaces:
            self._ifaces[key] = len(self._ifaces)
            opts = [(IF_NAME, (ifname or "-").encode()), (IF_TSRESOL, b"\x09")]
            if netns:
                opts.insert(1, (IF_DESCRIPTION, f"{ifname or '-'} in netns {netns}".encode()))
            body = struct.pack("<HHI", linktype, 0, self.snaplen) + _options(opts)
            self.f.write(_block(IDB, body))
        return self._ifaces[key]

    def packet(self, linktype: int, ifname: str, netns: int, time_ns: int, data: bytes,
               wirelen: int, note: str) -> None:
        iface = self._iface(linktype, ifname, netns)
        body = struct.pack("<IIIII", iface, time_ns >> 32, time_ns & 0xFFFFFFFF,
                           len(data), max(wirelen, len(data)))
        body += _pad(data) + _options([(OPT_COMMENT, note.encode())])
        self.f.write(_block(EPB, body))


def write_drops(drops: Iterable[RecordedDrop], out: str | Path, snaplen: int,
                netns_names: dict[int, str]) -> tuple[int, int]:
    """Write ``drops`` to ``out``; returns (packets written, drops with no packet
    header to write)."""
    written = skipped = 0
    try:
        with open(out, "wb") as f:
            w = PcapngWriter(f, snaplen)
            for d in drops:
                linktype = LINKTYPES.get(d.linktype)
                if linktype is None or not d.data:
                    skipped += 1
                    continue
                ev = d.event
                w.packet(linktype, ev.ifname or "", ev.netns or 0, ev.time_ns, d.data,
                         d.wirelen, comment(ev, netns_names))
                written += 1
    except OSError as err:
        raise io_error(out, err, "write") from None
    return written, skipped


def write_recording(off: Offline, out: str | Path,
                    keep: Callable[[DropEvent], bool] | None = None) -> int:
    """Every drop of a recording (that ``keep`` accepts) as pcapng; returns packets."""
    drops = (d for d in off.drops() if keep is None or keep(d.event))
    written, _ = write_drops(drops, out, int(off.rec.meta["snaplen"]) or 65535,
                             off.rec.netns)
    return written

