"""Dropped packets as pcapng, each with a comment naming its drop.

Written from the specification (IETF draft-ietf-opsawg-pcapng): a Section Header
Block, one Interface Description Block per (link type, interface, namespace), and an
Enhanced Packet Block per drop with two ``opt_comment`` options: the first gives the
reason, location, file:line, namespace and interface for people, the second is
``kdbg `` and a flat JSON object of the same facts (and the cause, when the drop has
one) for kdbg's Wireshark dissector (``kdbg.lua`` beside this module), which turns it
into ``kdbg.*`` fields that display filters match. A comment is the one part of a
packet that Wireshark 4.0's Lua sees; Retis keeps its events in pcapng custom blocks
read by a C plugin, which needs Wireshark 4.3 or later. Timestamps are in nanoseconds
(``if_tsresol`` 9). No PyPI writer fitted: python-pcapng and dpkt have seen no
release since 2022, and scapy's writer costs tens of microseconds a packet.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from kdbg import __version__
from kdbg.record import layout
from kdbg.record.offline import Offline, RecordedDrop
from kdbg.record.recfile import io_error
from kdbg.trace.cause import Cause
from kdbg.trace.event import DropEvent

SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET, LINKTYPE_RAW = 1, 101
OPT_END, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9
LINKTYPES = {layout.LINK_ETHERNET: LINKTYPE_ETHERNET, layout.LINK_RAW: LINKTYPE_RAW}
FIELDS_MARK = "kdbg "  # the comment that carries the fields starts so
# a conntrack tuple of the drop record's, flattened: its members' prefix
TUPLE_PREFIXES = {"ct_original": "ct_orig_", "ct_reply_tuple": "ct_reply_"}


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


def fields(ev: DropEvent, netns_names: dict[int, str]) -> dict[str, object]:
    """The drop's facts as the dissector's ``kdbg.*`` fields (docs/record.md): a flat
    object of strings, integers and booleans, absent facts left out."""
    out: dict[str, object] = {"reason": ev.reason, "location": ev.location}
    if ev.symbol:
        out["symbol"] = ev.symbol
    if ev.file:
        out["file"] = ev.file
        if ev.line:
            out["line"] = ev.line
    if ev.netns:
        out["netns"] = ev.netns
        if netns_names.get(ev.netns):
            out["netns_name"] = netns_names[ev.netns]
    if ev.ifname:
        out["ifname"] = ev.ifname
    if ev.ifindex:
        out["ifindex"] = ev.ifindex
    for name, value in ev.mark_ct().items():
        if isinstance(value, dict):  # a tuple: ct_orig_saddr, ct_reply_dport, ...
            out.update({f"{TUPLE_PREFIXES[name]}{k}": v for k, v in value.items()})
        else:
            out[name] = value
    if ev.cause is not None:
        out.update(_cause_fields(ev.cause))
    return out


def _cause_fields(c: Cause) -> dict[str, object]:
    out: dict[str, object] = {"cause": c.summary or c.meaning or ""}
    if c.established is not None:
        out["cause_established"] = c.established
    if c.hook:
        out["hook"] = c.hook
    if c.rule is not None:
        out["rule"] = c.rule.place
        if c.rule.handle is not None:
            out["rule_handle"] = c.rule.handle
    return out


def fields_comment(ev: DropEvent, netns_names: dict[int, str]) -> str:
    """The second comment: ``kdbg {"reason": ..., ...}``."""
    return FIELDS_MARK + json.dumps(fields(ev, netns_names), separators=(",", ":"),
                                    ensure_ascii=False)


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
               wirelen: int, *notes: str) -> None:
        iface = self._iface(linktype, ifname, netns)
        body = struct.pack("<IIIII", iface, time_ns >> 32, time_ns & 0xFFFFFFFF,
                           len(data), max(wirelen, len(data)))
        body += _pad(data) + _options([(OPT_COMMENT, n.encode()) for n in notes])
        self.f.write(_block(EPB, body))


def write_drops(drops: Iterable[RecordedDrop], out: str | Path, snaplen: int,
                netns_names: dict[int, str],
                cause: Callable[[DropEvent], DropEvent] | None = None) -> tuple[int, int]:
    """Write ``drops`` to ``out``, each event given its cause by ``cause`` when there is
    one; returns (packets written, drops with no packet header to write)."""
    written = skipped = 0
    try:
        with open(out, "wb") as f:
            w = PcapngWriter(f, snaplen)
            for d in drops:
                linktype = LINKTYPES.get(d.linktype)
                if linktype is None or not d.data:
                    skipped += 1
                    continue
                ev = cause(d.event) if cause is not None else d.event
                w.packet(linktype, ev.ifname or "", ev.netns or 0, ev.time_ns, d.data,
                         d.wirelen, comment(ev, netns_names), fields_comment(ev, netns_names))
                written += 1
    except OSError as err:
        raise io_error(out, err, "write") from None
    return written, skipped


def write_recording(off: Offline, out: str | Path,
                    keep: Callable[[DropEvent], bool] | None = None,
                    cause: Callable[[DropEvent], DropEvent] | None = None) -> int:
    """Every drop of a recording (that ``keep`` accepts) as pcapng, with its cause when
    ``cause`` gives one; returns packets."""
    drops = (d for d in off.drops() if keep is None or keep(d.event))
    written, _ = write_drops(drops, out, int(off.rec.meta["snaplen"]) or 65535,
                             off.rec.netns, cause)
    return written

