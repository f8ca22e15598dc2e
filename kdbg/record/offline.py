"""Reading a recording back: drops decoded with the facts the file carries, filtered,
grouped, counted. Nothing here reads the machine it runs on, so a report made
elsewhere (or with an empty environment) is the same.
"""

from __future__ import annotations

import ctypes as ct
import dataclasses
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbg.errors import BadInput
from kdbg.record import layout, recfile
from kdbg.symbols.kallsyms import Kallsyms, Location
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import filters as flt
from kdbg.trace.event import Decoder, DropEvent
from kdbg.trace.layout import RawDropEvent

GROUPS = ("reason", "location", "flow", "netns", "ifname")


class RecordedSymbols(Kallsyms):
    """The symbols a recording carries: exactly the addresses its events use."""

    def __init__(self, table: dict[int, dict[str, Any]]) -> None:
        super().__init__(())
        self._table = table

    def lookup(self, address: int) -> Location:
        info = self._table.get(address)
        if info is None:
            return Location(address, None, 0)
        return Location(address, info.get("symbol"), int(info.get("offset") or 0),
                        info.get("module"))


@dataclass(frozen=True)
class RecordedDrop:
    """One recorded drop: the event, and the packet's first bytes."""

    event: DropEvent
    linktype: int  # kdbg.record.layout.LINK_*
    data: bytes
    wirelen: int


class Offline:
    """A recording opened for reading (see :func:`load`)."""

    def __init__(self, rec: recfile.Recording) -> None:
        self.rec = rec
        meta = rec.meta
        self.head = layout.LAYOUTS.get(str(meta.get("layout")), layout.RawDropRecord)
        try:
            expect = layout.record_size(int(meta.get("snaplen", -1)), self.head)
            size = rec.record_size
        except (TypeError, ValueError, KeyError):
            expect, size = 0, -1
        if meta.get("layout") not in layout.LAYOUTS or size != expect:
            raise recfile.RecordingError(
                f"{rec.path}: records of layout {meta.get('layout')!r}, "
                f"{meta.get('record_size')} bytes; this kdbg reads "
                + " and ".join(repr(k) for k in layout.LAYOUTS))
        try:
            self.reasons = ReasonTable({int(k): str(v) for k, v in meta["reasons"].items()},
                                       f"recording {rec.path.name}")
            wall_offset = int(meta["wall_offset_ns"])
            str(meta["kernel"]["release"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise recfile.RecordingError(f"{rec.path}: its META block is incomplete ({err!r})"
                                         ) from None
        self.decoder = Decoder(self.reasons, RecordedSymbols(rec.symbols))
        self.decoder.wall_offset_ns = wall_offset

    @property
    def release(self) -> str:
        return str(self.rec.meta["kernel"]["release"])

    def drops(self) -> Iterator[RecordedDrop]:
        """Every record, decoded, in the order it was written."""
        head = self.head
        size = ct.sizeof(head)
        for buf in self.rec.raw_records():
            raw = head.from_buffer_copy(buf[:size])
            ev = self.decoder.decode(raw.ev)
            info = self.rec.symbols.get(raw.ev.location)
            if info and info.get("file"):
                ev = dataclasses.replace(ev, file=info["file"], line=info.get("line"))
            caplen = min(raw.caplen, len(buf) - size)
            yield RecordedDrop(ev, raw.linktype, bytes(buf[size:size + caplen]),
                               max(raw.wirelen, caplen))


    def pair_counts(self) -> Counter[tuple[int, int]]:
        """Records per (reason code, location address), read straight from the records'
        bytes: two strided views per block, no per-record decoding."""
        size = self.rec.record_size
        loc = layout.RING_HDR + RawDropEvent.location.offset
        reason = layout.RING_HDR + RawDropEvent.reason.offset
        counts: Counter[tuple[int, int]] = Counter()
        for buf, _n in self.rec.chunks:
            with buf.cast("Q") as q, buf.cast("I") as i:
                counts.update(zip(i[reason // 4::size // 4].tolist(),
                                  q[loc // 8::size // 8].tolist(), strict=True))
        return counts

    def location_text(self, address: int) -> str:
        """``symbol+0xoff [module]`` of a recorded address, with its file:line if known."""
        text = str(self.decoder.kallsyms.lookup(address))
        info = self.rec.symbols.get(address) or {}
        if info.get("file"):
            text += f"  ({info['file']}:{info['line']})" if info.get("line") else \
                f"  ({info['file']})"
        return text


def load(path: str | Path) -> Offline:
    """Open a recording (RecordingError/RecordingIOError on a bad one)."""
    return Offline(recfile.read(path))


# -- filters, as watch's, applied in Python ----------------------------------

@dataclass(frozen=True)
class OfflineFilter:
    """``kdbg watch``'s filters over decoded events (values ORed, options ANDed)."""

    reasons: frozenset[str] = frozenset()
    locations: tuple[tuple[str, str | None, int | None], ...] = ()  # (kind, symbol, n)
    spec: flt.FilterSpec = flt.FilterSpec()

    @property
    def empty(self) -> bool:
        """True when it keeps everything."""
        return not self.reasons and not self.locations and self.spec == flt.FilterSpec()

    def __call__(self, ev: DropEvent) -> bool:
        if self.reasons and ev.reason not in self.reasons:
            return False
        if self.locations and not any(_at(ev, loc) for loc in self.locations):
            return False
        s = self.spec
        if s.proto is not None:
            num, fam = flt.PROTOCOLS[s.proto]
            if ev.proto != s.proto or (fam and ev.family != f"ipv{fam}"):
                return False
        for nets, addrs in ((s.saddrs, (ev.saddr,)), (s.daddrs, (ev.daddr,)),
                            (s.addrs, (ev.saddr, ev.daddr))):
            if nets and not any(a is not None and a in n for n in nets for a in addrs):
                return False
        for ports, have in ((s.sports, (ev.sport,)), (s.dports, (ev.dport,)),
                            (s.ports, (ev.sport, ev.dport))):
            if ports and not any(p is not None and p in ports for p in have):
                return False
        if s.netns is not None and ev.netns != s.netns:
            return False
        return s.ifname is None or ev.ifname == s.ifname


def _at(ev: DropEvent, loc: tuple[str, str | None, int | None]) -> bool:
    kind, symbol, n = loc
    if kind == "address":
        return ev.address == n
    if kind == "symbol":
        return ev.symbol == symbol
    return ev.symbol == symbol and ev.offset == n


_LOC = re.compile(r"^(?P<sym>[A-Za-z_.$][\w.$]*)(?:\+(?P<off>0x[0-9a-fA-F]+|\d+))?$")


def offline_filter(cfg: flt.PacketFilters, table: ReasonTable,
                   netns_names: dict[int, str]) -> OfflineFilter:
    """Resolve ``cfg``'s filters against the file's own names (its reasons, and the
    names of its namespaces)."""
    reasons = frozenset(table.name(table.code(r)) for r in cfg.reasons)
    locs: list[tuple[str, str | None, int | None]] = []
    for text in cfg.locations:
        text = text.strip()
        if re.fullmatch(r"0x[0-9a-fA-F]+", text):
            locs.append(("address", None, int(text, 16)))
            continue
        m = _LOC.match(text)
        if not m:
            raise BadInput(f"cannot parse location {text!r}", hint="use SYM, SYM+0xOFF or 0xADDR")
        if m["off"] is None:
            locs.append(("symbol", m["sym"], None))
        else:
            locs.append(("symoff", m["sym"], int(m["off"], 0)))
    if cfg.proto is not None and cfg.proto not in flt.PROTOCOLS:
        raise BadInput(f"unknown protocol {cfg.proto!r}", hint="one of " + ", ".join(flt.PROTOCOLS))
    netns = None
    if cfg.netns is not None:
        by_name = {v: k for k, v in netns_names.items()}
        netns = by_name.get(cfg.netns.strip())
        if netns is None:
            netns = flt.parse_netns(cfg.netns)
    spec = flt.FilterSpec(
        proto=cfg.proto,
        saddrs=tuple(flt.parse_network(v) for v in cfg.saddrs),
        daddrs=tuple(flt.parse_network(v) for v in cfg.daddrs),
        addrs=tuple(flt.parse_network(v) for v in cfg.addrs),
        sports=tuple(flt.parse_port(v) for v in cfg.sports),
        dports=tuple(flt.parse_port(v) for v in cfg.dports),
        ports=tuple(flt.parse_port(v) for v in cfg.ports),
        netns=netns,
        ifname=flt.parse_ifname(cfg.ifname) if cfg.ifname is not None else None)
    return OfflineFilter(reasons, tuple(locs), spec)


# -- grouping ----------------------------------------------------------------

def _endpoint(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
              port: int | None) -> str:
    if addr is None:
        return "-"
    if port is None:
        return str(addr)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def group_key(ev: DropEvent, by: str, netns_names: dict[int, str]) -> str:
    """The value of ``ev`` that ``--group-by by`` counts."""
    if by == "reason":
        return ev.reason
    if by == "location":
        if ev.file is None:
            return ev.location
        return ev.location + (f"  ({ev.file}:{ev.line})" if ev.line else f"  ({ev.file})")
    if by == "flow":
        return (f"{ev.proto or '-'} {_endpoint(ev.saddr, ev.sport)} > "
                f"{_endpoint(ev.daddr, ev.dport)}")
    if by == "netns":
        if ev.netns is None:
            return "-"
        name = netns_names.get(ev.netns)
        return f"{ev.netns} ({name})" if name else str(ev.netns)
    if by == "ifname":
        return ev.ifname or "-"
    raise BadInput(f"cannot group by {by!r}", hint="one of " + ", ".join(GROUPS))


def group(events: Iterable[DropEvent], by: str, netns_names: dict[int, str],
          top: int | None = None) -> list[tuple[str, int]]:
    """(key, count) largest first (ties by key), at most ``top`` of them."""
    return ranked(Counter(group_key(ev, by, netns_names) for ev in events), top)


def ranked(counts: Counter[str], top: int | None) -> list[tuple[str, int]]:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return rows[:top] if top is not None else rows


def stats_counts(events: Iterable[DropEvent]) -> Counter[tuple[int, int]]:
    """Counts per (reason code, location address), as the kernel keeps them."""
    return Counter((ev.reason_code, ev.address) for ev in events)
