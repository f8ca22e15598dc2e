"""Presenting drops: aligned text lines, JSON lines and stats tables.

Pure functions over decoded events and counts, so they are tested on
checked-in JSON lines files without a kernel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kdbg.trace.bpfverdict import BpfProg
from kdbg.trace.event import DropEvent
from kdbg.trace.headers import arp_op_name
from kdbg.trace.journeytext import journey_lines
from kdbg.trace.lines import LineSink
from kdbg.trace.more import Summarized

COLUMNS = (
    ("TIME", 15), ("CPU", 3), ("PID", 7), ("COMM", 15), ("REASON", 16),
    ("LOCATION", 28), ("PROTO", 5), ("SOURCE", 22), ("DESTINATION", 22),
    ("NETNS", 10), ("IF", 0),
)


@dataclass(frozen=True)
class StatsRow:
    """Drops counted in the kernel for one (reason, location)."""

    reason: str
    reason_code: int
    location: str
    address: int
    count: int


@dataclass(frozen=True)
class Summary:
    """What a watch saw, in total."""

    matched: int
    delivered: int
    lost: int
    seen: int | None  # None: not counted (the --stats fast path)
    stats_full: int = 0
    streaming: bool = True  # False under --stats alone: nothing was meant to be shown
    summarized: int = 0  # counted in the kernel instead of sent: the "more" records

    @property
    def queued(self) -> int:
        """Sent and not printed: still in the ring when a --count ended the watch."""
        return self.matched - self.delivered - self.summarized - self.lost


def header() -> str:
    return " ".join(f"{name:<{width}}" if width else name for name, width in COLUMNS)


def endpoint(addr: Any, port: int | None, icmp: bool) -> str:
    """``addr:port`` (``[v6]:port``), the address alone for ICMP or no port, ``-`` for none."""
    if addr is None:
        return "-"
    text = f"[{addr}]" if addr.version == 6 and port is not None else str(addr)
    return f"{text}:{port}" if port is not None and not icmp else text


def wall_clock(time_ns: int) -> str:
    """``HH:MM:SS.micro`` in local time: a drop's time as the text lines show it."""
    secs, ns = divmod(time_ns, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(secs)) + f".{ns // 1000:06d}"


def drop_line(ev: DropEvent) -> str:
    """One aligned line for a drop (columns as in :func:`header`)."""
    icmp = ev.icmp_type is not None
    proto = ev.proto or "-"
    cells = [
        wall_clock(ev.time_ns), str(ev.cpu), str(ev.pid), ev.comm, ev.reason,
        ev.location,
        proto, endpoint(ev.saddr, ev.sport, icmp), endpoint(ev.daddr, ev.dport, icmp),
        str(ev.netns) if ev.netns else "-", ev.ifname or "-",
    ]
    parts = []
    for (_, width), cell in zip(COLUMNS, cells, strict=True):
        parts.append(f"{cell:<{width}}" if width else cell)
    line = " ".join(parts)
    if icmp:
        line += f" icmp type={ev.icmp_type} code={ev.icmp_code} id={ev.sport} seq={ev.dport}"
    if ev.arp_op is not None:
        line += f" arp {arp_op_name(ev.arp_op)}"
    if ev.file is not None:  # last, so the columns stay aligned
        line += f"  ({ev.file}:{ev.line})" if ev.line else f"  ({ev.file})"
    if ev.cause is not None:  # after file:line, so the columns stay aligned
        line += f"  cause: {ev.cause.text}"
    if ev.prog is not None:
        line += prog_note(ev.prog)
    return line


def prog_note(prog: BpfProg) -> str:
    """``  prog ID NAME: the verdict line's text`` (or its candidate lines), the end of
    a BPF verdict's line."""
    note = f"  prog {prog.id} {prog.name}"
    if len(prog.lines) == 1:
        note += f": {prog.lines[0].text}"
    elif prog.lines:
        note += " returns it at lines " + ", ".join(str(ln.line) for ln in prog.lines)
    return note


def stack_lines(ev: DropEvent) -> list[str]:
    return [f"    #{i:<2} {frame}" for i, frame in enumerate(ev.stack or ())]


def journey_block(ev: DropEvent) -> list[str]:
    """The drop's journey under its line (``--journey``), or nothing."""
    return ["    " + line for line in journey_lines(ev.journey)] if ev.journey else []


def drop_json(ev: DropEvent) -> str:
    return json.dumps(ev.to_json(), separators=(",", ":"))


def stats_rows(
    counts: Mapping[tuple[int, int], int],
    reason_name: Any,
    locate: Any,
) -> list[StatsRow]:
    """Rows sorted by count, largest first; ``reason_name(code)``, ``locate(addr) -> str``."""
    rows = [
        StatsRow(reason_name(code), code, str(locate(addr)), addr, n)
        for (code, addr), n in counts.items()
    ]
    return sorted(rows, key=lambda r: (-r.count, r.reason, r.location))


def stats_table(rows: Iterable[StatsRow], summary: Summary) -> str:
    rows = list(rows)
    out = [f"{'COUNT':>10}  {'REASON':<24} LOCATION"]
    out += [f"{r.count:>10}  {r.reason:<24} {r.location}" for r in rows]
    out.append(f"{sum(r.count for r in rows):>10}  total")
    if summary.stats_full:
        out.append(f"warning: {summary.stats_full} drops not counted per location "
                   "(stats table full)")
    return "\n".join(out)


def stats_json(rows: Iterable[StatsRow], summary: Summary, final: bool) -> str:
    rec = {
        "type": "stats",
        "final": final,
        "time_ns": time.time_ns(),
        "matched": summary.matched,
        "lost": summary.lost,
        "seen": summary.seen,
        "counts": [
            {"reason": r.reason, "reason_code": r.reason_code, "location": r.location,
             "address": f"0x{r.address:x}", "count": r.count}
            for r in rows
        ],
    }
    return json.dumps(rec, separators=(",", ":"))


def summary_line(s: Summary) -> str:
    """The last line: how many drops matched, as the kernel counted them, and where each
    went: printed, summarized in a "more" line, or lost."""
    if not s.streaming or not s.summarized:
        text = f"kdbg: {s.matched:,} drops matched"
        if s.streaming and s.delivered != s.matched:
            text += f", {s.delivered:,} shown"
        text += f", {s.lost:,} lost"
    else:
        text = (f"kdbg: {s.matched:,} drops matched: {s.delivered:,} printed + "
                f"{s.summarized:,} summarized, {s.lost:,} lost")
        if s.queued:
            text += f", {s.queued:,} queued when the watch ended"
    if s.lost:
        text += " (neither sent nor counted per key: raise --buffer-pages, or use --stats)"
    return text


def summary_json(s: Summary) -> str:
    return json.dumps({"type": "summary", "matched": s.matched, "shown": s.delivered,
                       "summarized": s.summarized, "lost": s.lost, "seen": s.seen},
                      separators=(",", ":"))


def more_line(m: Summarized) -> str:
    """``    ... and N more like this: REASON at LOCATION, packet, netns, device``."""
    parts = [f"{m.reason} at {m.location}"]
    if "proto" in m.by and m.proto is not None:
        icmp = m.icmp_type is not None
        flow = (f"{m.proto} {endpoint(m.saddr, m.sport, icmp)} -> "
                f"{endpoint(m.daddr, m.dport, icmp)}")
        if icmp:
            flow += f" type {m.icmp_type} code {m.icmp_code}"
        parts.append(flow)
    parts.append(f"netns {m.netns or '-'} {m.ifname or '-'}")
    text = f"    ... and {m.count:,} more like this: " + ", ".join(parts)
    if "proto" not in m.by:
        text += " (any packet: kdbg's table by packet was full)"
    if m.prog is not None:
        text += prog_note(m.prog)
    return text


def more_json(m: Summarized) -> str:
    return json.dumps(m.to_json(), separators=(",", ":"))


def read_jsonl(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Parse JSON lines, skipping blanks."""
    return [json.loads(line) for line in lines if line.strip()]


class TextSink(LineSink):
    """Aligned text on ``out``; progress and the summary on ``err``."""

    def __init__(self, out: Any, err: Any) -> None:
        super().__init__(out, err)
        self._header_done = False

    def drop(self, event: DropEvent) -> None:
        if not self._header_done:
            self._add(header())
            self._header_done = True
        self._add(drop_line(event))
        for line in stack_lines(event) + journey_block(event):
            self._add(line)

    def stats(self, rows: list[StatsRow], summary: Summary, final: bool) -> None:
        stamp = "final" if final else time.strftime("%H:%M:%S")
        self._write(self.out, f"-- drops by reason and location ({stamp}) --")
        self._write(self.out, stats_table(rows, summary))

    def more(self, summarized: Summarized) -> None:
        self._write(self.out, more_line(summarized))

    def summary(self, summary: Summary) -> None:
        self.flush()
        self._write(self.err, summary_line(summary))


class JsonSink(LineSink):
    """JSON lines on ``out``, every record tagged with ``"type"``."""

    def drop(self, event: DropEvent) -> None:
        self._add(drop_json(event))

    def stats(self, rows: list[StatsRow], summary: Summary, final: bool) -> None:
        self._write(self.out, stats_json(rows, summary, final))

    def more(self, summarized: Summarized) -> None:
        self._write(self.out, more_json(summarized))

    def summary(self, summary: Summary) -> None:
        self._write(self.out, summary_json(summary))
        if summary.lost:
            self._write(self.err, summary_line(summary))
