"""Reading a recording back: drops decoded with the facts the file carries, filtered,
grouped, counted. Nothing here reads the machine it runs on, so a report made
elsewhere (or with an empty environment) is the same.
"""

from __future__ import annotations

import ctypes as ct
import dataclasses
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbg.drops import layout, recfile
from kdbg.errors import BadInput
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
    linktype: int  # kdbg.drops.layout.LINK_*
    data: bytes
    wirelen: int


class Offline:
    """A recording opened for reading (see :func:`load`)."""

    def __init__(self, rec: recfile.Recording) -> None:
        self.rec = rec
        meta = rec.meta
        try:
            expect = layout.record_size(int(meta.get("snaplen", -1)))
            size = rec.record_size
        except (TypeError, ValueError, KeyError):
            expect, size = 0, -1
        if meta.get("layout") != "kdbg_drop_record 1" or size != expect:
            raise recfile.RecordingError(
                f"{rec.path}: records of layout {meta.get('layout')!r}, "
                f"{meta.get('record_size')} bytes; this kdbg reads 'kdbg_drop_record 1'")
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
        head = layout.RawDropRecord
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


def offline_filter(cfg: flt.PacketFilters, off: Offline) -> OfflineFilter:
    """Resolve ``cfg``'s filters against the recording's own names (reasons, netns)."""
    reasons = frozenset(off.reasons.name(off.reasons.code(r)) for r in cfg.reasons)
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
        by_name = {v: k for k, v in off.rec.netns.items()}
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


# -- kdbg report -------------------------------------------------------------

@dataclass(frozen=True)
class ReportConfig:
    """What ``kdbg report`` was asked for."""

    path: str
    filters: flt.PacketFilters = flt.PacketFilters()
    stats: bool = False
    group_by: str | None = None
    top: int | None = None
    pcap: str | None = None


@dataclass(frozen=True)
class ReportResult:
    """What a report read: totals, what the kernel counted, and how the file ended."""

    path: str
    release: str
    hostname: str
    records: int  # in the file's whole blocks
    shown: int  # that passed the filters
    end: dict[str, Any] | None  # the END block: None when the file was cut before it
    truncated_bytes: int
    groups: tuple[tuple[str, int], ...] = ()
    counts: tuple[tuple[tuple[int, int], int], ...] = ()
    pcap_packets: int | None = None


def report(cfg: ReportConfig, on_drop: Callable[[DropEvent], None] | None = None
           ) -> tuple[Offline, ReportResult]:
    """Read ``cfg.path``; pass each drop the filters keep to ``on_drop`` (unless it is
    grouped, counted or written as pcapng instead)."""
    if cfg.top is not None and cfg.top <= 0:
        raise BadInput("--top must be positive")
    if cfg.group_by is not None and cfg.group_by not in GROUPS:
        raise BadInput(f"cannot group by {cfg.group_by!r}", hint="one of " + ", ".join(GROUPS))
    off = load(cfg.path)
    keep = offline_filter(cfg.filters, off)
    shown = 0
    kept: list[DropEvent] = []
    pairs: Counter[tuple[int, int]] | None = None
    packets = None
    if cfg.pcap is not None:
        from kdbg.drops import pcapng

        def counted(ev: DropEvent) -> bool:
            nonlocal shown
            ok = keep(ev)
            shown += ok
            return ok

        packets = pcapng.write_recording(off, cfg.pcap, counted)
    elif keep.empty and (cfg.stats or cfg.group_by in ("reason", "location")):
        # Counts by reason and location need no decoding: read them from the bytes.
        pairs = off.pair_counts()
        shown = off.rec.records
    else:
        collect = cfg.stats or cfg.group_by is not None
        for d in off.drops():
            if not keep(d.event):
                continue
            shown += 1
            if collect:
                kept.append(d.event)
            elif on_drop is not None:
                on_drop(d.event)
    groups: tuple[tuple[str, int], ...] = ()
    if pairs is not None and cfg.group_by is not None:
        name = off.reasons.name if cfg.group_by == "reason" else off.location_text
        by_key: Counter[str] = Counter()
        for (code, address), n in pairs.items():
            by_key[name(code if cfg.group_by == "reason" else address)] += n
        groups = tuple(ranked(by_key, cfg.top))
    elif cfg.group_by is not None:
        groups = tuple(group(kept, cfg.group_by, off.rec.netns, cfg.top))
    counts: tuple[tuple[tuple[int, int], int], ...] = ()
    if cfg.stats:
        per = pairs if pairs is not None else stats_counts(kept)
        rows = sorted(per.items(), key=lambda kv: -kv[1])
        counts = tuple(rows[:cfg.top] if cfg.top is not None else rows)
    meta = off.rec.meta
    return off, ReportResult(
        path=cfg.path, release=off.release, hostname=str(meta.get("hostname", "?")),
        records=off.rec.records, shown=shown, end=off.rec.end,
        truncated_bytes=off.rec.truncated_bytes, groups=groups, counts=counts,
        pcap_packets=packets)


def group_table(rows: Iterable[tuple[str, int]], by: str) -> str:
    """COUNT and the group's key, one row each, and the total."""
    rows = list(rows)
    out = [f"{'COUNT':>10}  {by.upper()}"]
    out += [f"{n:>10}  {key}" for key, n in rows]
    out.append(f"{sum(n for _, n in rows):>10}  total")
    return "\n".join(out)


def group_json(key: str, count: int, by: str) -> str:
    return json.dumps({"type": "group", "by": by, "key": key, "count": count},
                      separators=(",", ":"))


def summary_lines(r: ReportResult) -> list[str]:
    """What the report says on stderr: the totals, the kernel's count, any cut."""
    text = (f"kdbg: {r.path}: {r.records} drops recorded on Linux {r.release} "
            f"({r.hostname}), {r.shown} matched the filters")
    if r.pcap_packets is not None:
        text += f", {r.pcap_packets} written as pcapng"
    if r.end is not None:
        text += (f"; in the kernel: {r.end['matched']} matched, {r.end['lost']} lost")
    lines = [text]
    if r.truncated_bytes or r.end is None:
        lines.append(f"kdbg: warning: {r.path} was cut short: {r.truncated_bytes} bytes after "
                     "its last whole block were not read, and it has no END block, so the "
                     "in-kernel count is unknown")
    elif r.end["records"] != r.records:
        lines.append(f"kdbg: warning: the END block counts {r.end['records']} records, the "
                     f"file holds {r.records}")
    return lines


def summary_json(r: ReportResult) -> str:
    end = r.end or {}
    return json.dumps({
        "type": "summary", "file": r.path, "release": r.release, "records": r.records,
        "shown": r.shown, "matched": end.get("matched"), "lost": end.get("lost"),
        "seen": end.get("seen"), "complete": r.end is not None and not r.truncated_bytes,
        "truncated_bytes": r.truncated_bytes, "pcap_packets": r.pcap_packets,
    }, separators=(",", ":"))
