"""Presenting paths: one block per packet, one line per hop, or JSON lines.

Pure functions over decoded records, so they are tested on checked-in JSON
lines files without a kernel.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kdbg.trace.lines import LineSink

from .event import End, Hop, PathRecord


@dataclass(frozen=True)
class PathSummary:
    """What a path trace saw, in total."""

    packets: int   # packets the kernel started tracking
    ended: int     # of those, paths that ended while we watched
    shown: int     # paths reported (ended, or open when tracing stopped)
    lost: int      # records the ring buffer could not take
    track_full: int = 0


def _where(netns: int | None, name: str | None, ifname: str | None) -> str:
    ns = "-" if netns is None else f"{netns}" + (f" ({name})" if name else "")
    return f"{ns:<26} {ifname or '-':<12}"


def _since(ns: int) -> str:
    return f"+{ns / 1e6:.3f}ms"


def hop_line(hop: Hop) -> str:
    """``+0.012ms  NETNS (name)  IF  TRACEPOINT  summary``."""
    tp = hop.tracepoint.split(":", 1)[-1]
    return (f"  {_since(hop.since_first_ns):>11}  {_where(hop.netns, hop.netns_name, hop.ifname)}"
            f" {tp:<24} {hop.headers.summary()}")


def end_line(end: End) -> str:
    """The last line of a block: ``dropped REASON at sym+0x..`` or ``consumed at ...``."""
    what = end.fate + (f" {end.reason}" if end.reason else "")
    if end.location:
        what += f" at {end.location}"
    where = _where(end.netns, end.netns_name, end.ifname)
    return f"  {_since(end.since_first_ns):>11}  {where} {what}"


def block(hops: list[Hop], end: End | None) -> list[str]:
    """The lines of one packet: a title, its hops in order, and how it ended."""
    first: PathRecord | None = hops[0] if hops else end
    if first is None:
        return []
    title = f"packet {first.packet} skb 0x{first.skb:x}"
    if hops:
        title += f": {hops[0].headers.summary()}"
    lines = [title]
    lines += [hop_line(h) for h in hops]
    lines.append(end_line(end) if end is not None else "  (still in flight when tracing stopped)")
    return lines


@dataclass
class Assembler:
    """Groups records per packet; a block is complete when its path ends."""

    open: dict[int, list[Hop]] = field(default_factory=dict)

    def add(self, rec: PathRecord) -> list[str] | None:
        """Lines of a finished block, or None while the packet is still on its way."""
        if isinstance(rec, Hop):
            self.open.setdefault(rec.packet, []).append(rec)
            return None
        return block(self.open.pop(rec.packet, []), rec)

    def flush(self) -> list[list[str]]:
        """Blocks of packets still open, in order of first sight."""
        out = [block(hops, None) for _, hops in sorted(self.open.items())]
        self.open.clear()
        return out


def render(records: Iterable[PathRecord]) -> str:
    """All blocks of a finished trace, as ``kdbg path`` prints them."""
    asm = Assembler()
    blocks = [b for b in (asm.add(r) for r in records) if b is not None]
    blocks += asm.flush()
    return "\n".join("\n".join(b) for b in blocks)


def summary_line(s: PathSummary) -> str:
    text = f"kdbg: {s.packets} packets tracked, {s.ended} paths ended, {s.lost} lost"
    if s.lost:
        text += " (ring buffer full: raise --buffer-pages or narrow the filters)"
    if s.track_full:
        text += f", {s.track_full} not tracked (tracking map full)"
    return text


def record_json(rec: PathRecord) -> str:
    return json.dumps(rec.to_json(), separators=(",", ":"))


def summary_json(s: PathSummary) -> str:
    return json.dumps({"type": "summary", "packets": s.packets, "ended": s.ended,
                       "shown": s.shown, "lost": s.lost, "track_full": s.track_full},
                      separators=(",", ":"))


class TextSink(LineSink):
    """Blocks on ``out`` as paths end; progress and the summary on ``err``."""

    def __init__(self, out: Any, err: Any) -> None:
        super().__init__(out, err)
        self.asm = Assembler()

    def record(self, rec: PathRecord) -> None:
        lines = self.asm.add(rec)
        if lines is not None:
            self._write(self.out, "\n".join(lines))

    def summary(self, summary: PathSummary) -> None:
        for lines in self.asm.flush():
            self._write(self.out, "\n".join(lines))
        self._write(self.err, summary_line(summary))


class JsonSink(LineSink):
    """JSON lines on ``out`` as records arrive, each tagged with ``"type"``."""

    def record(self, rec: PathRecord) -> None:
        self._write(self.out, record_json(rec))

    def summary(self, summary: PathSummary) -> None:
        self._write(self.out, summary_json(summary))
        if summary.lost:
            self._write(self.err, summary_line(summary))
