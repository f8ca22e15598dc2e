"""``kdbg report``: a recording read back, filtered as ``kdbg watch`` filters, then
shown as drops, grouped, counted, or written as pcapng; and what the report says
about the file (its totals, the kernel's count, a cut).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kdbg.errors import BadInput
from kdbg.record import pcapng
from kdbg.record.offline import GROUPS, Offline, group, load, offline_filter, ranked, stats_counts
from kdbg.trace import filters as flt
from kdbg.trace.event import DropEvent


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
    keep = offline_filter(cfg.filters, off.reasons, off.rec.netns)
    shown = 0
    kept: list[DropEvent] = []
    pairs: Counter[tuple[int, int]] | None = None
    packets = None
    if cfg.pcap is not None:
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
