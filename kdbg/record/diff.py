"""``kdbg report A B``: two drop profiles compared, per reason, location, cause and flow.

A profile is a recording (``kdbg watch --write``) or the JSON lines of ``kdbg watch
--json`` (which carry each drop's cause; a recording carries none, the recorder
computing no cause). Each side is read with the same filters and counted per key of
each dimension; every key of either side is one row: added (only in B), gone (only
in A), changed or same, with its count on each side and its rate where the side's
duration is known (a recording's, from its META start to its END). Rows come most
changed first.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdbg.errors import BadInput
from kdbg.record import recfile
from kdbg.record.offline import OfflineFilter, group_key, load, offline_filter
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import filters as flt
from kdbg.trace.cause import Cause
from kdbg.trace.event import DropEvent

DIMENSIONS = ("reason", "location", "cause", "flow")


@dataclass
class Profile:
    """One side of a diff: what it is, its duration, and its counts per dimension."""

    path: str
    kind: str  # "recording" or "json lines"
    release: str | None
    drops: int = 0  # that passed the filters
    seconds: float | None = None  # None: the file does not say how long it ran
    has_causes: bool = False
    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def rate(self, n: int) -> float | None:
        return n / self.seconds if self.seconds else None

    def describe(self) -> str:
        span = f" in {self.seconds:.1f} s" if self.seconds is not None else ""
        on = f" on Linux {self.release}" if self.release else ""
        return f"{self.path}: {self.drops} drops{span} ({self.kind}{on})"


def cause_key(c: Cause | None) -> str:
    """What decided a drop, the same for every drop of that cause: the rule (its place
    and text), the rules that could have, the socket wanted or the sockets whose queue
    was full; else the cause's summary."""
    if c is None:
        return "-"
    if c.rule is not None:
        what = "policy drop" if c.rule.policy is not None else (c.rule.text or "")
        return f"{c.reason}: {c.rule.place}: {what}"
    if c.candidates:
        return f"{c.reason}: one of " + "; ".join(r.place for r in c.candidates)
    if c.socket is not None:
        s = c.socket
        addr = f"[{s.address}]" if ":" in s.address else s.address
        return f"{c.reason}: no {s.proto} socket on {addr}:{s.port}"
    if c.listeners:
        return f"{c.reason}: " + ", ".join(sorted(lst.endpoint for lst in c.listeners))
    return f"{c.reason}: {c.summary}"


def _key(ev: DropEvent, dim: str, names: dict[int, str]) -> str:
    return cause_key(ev.cause) if dim == "cause" else group_key(ev, dim, names)


def _count(p: Profile, events: Iterable[DropEvent], keep: OfflineFilter,
           dims: Sequence[str], names: dict[int, str]) -> None:
    p.counts = {d: Counter() for d in dims}
    for ev in events:
        if not keep(ev):
            continue
        p.drops += 1
        p.has_causes = p.has_causes or ev.cause is not None
        for d in dims:
            p.counts[d][_key(ev, d, names)] += 1


def _json_events(path: str) -> Iterator[DropEvent]:
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read {path}: {err}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if rec.get("type") == "drop":
                yield DropEvent.from_json(rec)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise BadInput(f"{path}:{n}: not a kdbg watch --json line ({err})") from None


def profile(path: str, filters: flt.PacketFilters, dims: Sequence[str]) -> Profile:
    """The drop counts of one recording or ``kdbg watch --json`` file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise recfile.RecordingIOError(f"cannot read {path}: {err.strerror}") from None
    if head.startswith(b"KDBGREC"):
        off = load(path)
        end = off.rec.end
        p = Profile(path, "recording", off.release)
        started = off.rec.meta.get("started_ns")
        if end is not None and started is not None and end.get("ended_ns"):
            p.seconds = (int(end["ended_ns"]) - int(started)) / 1e9
        keep = offline_filter(filters, off.reasons, off.rec.netns)
        _count(p, (d.event for d in off.drops()), keep, dims, off.rec.netns)
        return p
    if not head.lstrip().startswith(b"{"):
        raise BadInput(f"{path} is neither a kdbg recording nor kdbg watch --json lines")
    events = list(_json_events(path))
    names = {ev.cause.netns: ev.cause.netns_name for ev in events
             if ev.cause is not None and ev.cause.netns and ev.cause.netns_name}
    reasons = ReasonTable({ev.reason_code: ev.reason for ev in events}, path)
    p = Profile(path, "json lines", None)
    _count(p, events, offline_filter(filters, reasons, names), dims, names)
    return p


@dataclass(frozen=True)
class Row:
    """One key of one dimension, on both sides."""

    dim: str
    key: str
    a: int
    b: int
    a_rate: float | None
    b_rate: float | None

    @property
    def change(self) -> str:
        if self.a == self.b:
            return "same"
        return "added" if self.a == 0 else "gone" if self.b == 0 else "changed"

    def to_json(self) -> dict[str, Any]:
        return {"type": "diff", "key": {self.dim: self.key}, "a": self.a, "b": self.b,
                "change": self.change, "a_rate": _round(self.a_rate),
                "b_rate": _round(self.b_rate)}


def _round(rate: float | None) -> float | None:
    return round(rate, 3) if rate is not None else None


@dataclass(frozen=True)
class Diff:
    a: Profile
    b: Profile
    rows: tuple[Row, ...]
    skipped: tuple[tuple[str, str], ...]  # (dimension, why it was not compared)


def diff(a: Profile, b: Profile, dims: Sequence[str]) -> Diff:
    """Every key of each dimension in ``dims``, most changed first (by count, then by
    rate, then by key)."""
    rows: list[Row] = []
    skipped: list[tuple[str, str]] = []
    for dim in dims:
        if dim == "cause" and not (a.has_causes and b.has_causes):
            lacking = [p.path for p in (a, b) if not p.has_causes]
            skipped.append((dim, f"{' and '.join(lacking)} carr{'y' if len(lacking) > 1 else 'ies'}"
                                 " no causes (a recording never does: compare kdbg watch "
                                 "--json files)"))
            continue
        ca, cb = a.counts[dim], b.counts[dim]
        for key in set(ca) | set(cb):
            rows.append(Row(dim, key, ca[key], cb[key], a.rate(ca[key]), b.rate(cb[key])))
    rows.sort(key=lambda r: (dims.index(r.dim), -abs(r.b - r.a),
                             -abs((r.b_rate or 0) - (r.a_rate or 0)), r.key))
    return Diff(a, b, tuple(rows), tuple(skipped))


def check_dims(dims: Sequence[str]) -> tuple[str, ...]:
    """``--by``'s dimensions, each known, in the order given (default: all)."""
    out = tuple(dict.fromkeys(dims)) or DIMENSIONS
    bad = [d for d in out if d not in DIMENSIONS]
    if bad:
        raise BadInput(f"cannot compare by {bad[0]!r}", hint="one of " + ", ".join(DIMENSIONS))
    return out


def compare(path_a: str, path_b: str, filters: flt.PacketFilters,
            dims: Sequence[str] = ()) -> Diff:
    """``kdbg report A B``: both files read with ``filters``, then compared."""
    by = check_dims(dims)
    return diff(profile(path_a, filters, by), profile(path_b, filters, by), by)


def _rate(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def diff_text(d: Diff, top: int | None = None) -> str:
    """The rows per dimension (``top`` of each), unchanged keys only counted."""
    out = [f"A = {d.a.describe()}", f"B = {d.b.describe()}"]
    for dim in dict.fromkeys(r.dim for r in d.rows):
        rows = [r for r in d.rows if r.dim == dim]
        moved = [r for r in rows if r.change != "same"]
        out += ["", f"{'CHANGE':<8} {'A':>9} {'B':>9} {'B-A':>9} {'A/S':>9} {'B/S':>9}  "
                    f"{dim.upper()}"]
        for r in moved[:top] if top is not None else moved:
            out.append(f"{r.change:<8} {r.a:>9} {r.b:>9} {r.b - r.a:>+9} {_rate(r.a_rate):>9} "
                       f"{_rate(r.b_rate):>9}  {r.key}")
        hidden = len(moved) - (min(top, len(moved)) if top is not None else len(moved))
        same = len(rows) - len(moved)
        tail = [f"{hidden} more changed" if hidden else "",
                f"{same} unchanged" if same else ""]
        if any(tail):
            out.append("(" + ", ".join(t for t in tail if t) + ")")
    for dim, why in d.skipped:
        out += ["", f"{dim.upper()}: not compared: {why}"]
    return "\n".join(out)


def diff_json(d: Diff) -> list[str]:
    """One ``{"type": "diff"}`` record per key, then a summary of both sides."""
    recs: list[dict[str, Any]] = [r.to_json() for r in d.rows]
    recs += [{"type": "not_compared", "by": dim, "why": why} for dim, why in d.skipped]
    recs.append({"type": "summary",
                 **{side: {"file": p.path, "kind": p.kind, "release": p.release,
                           "drops": p.drops, "seconds": p.seconds}
                    for side, p in (("a", d.a), ("b", d.b))}})
    return [json.dumps(r, separators=(",", ":")) for r in recs]
