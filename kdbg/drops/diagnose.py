"""``kdbg diagnose``: watch drops for a while, then report them grouped by cause.

The watch is ``kdbg watch``'s (same filters, same ``kdbg: watching`` line); each
drop gets its cause from :class:`kdbg.drops.causes.CauseFinder`, and drops with the
same cause (the same rule, the same missing socket, the same setting) are counted
together: count, first and last seen, one example packet, the cause and the advice,
most frequent first. Before the report, every named rule is read again: a rule
changed or deleted since the drop is said so, with the text that decided.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from kdbg.drops.causes import group_of
from kdbg.drops.output import StatsRow, Summary, endpoint
from kdbg.drops.watch import WatchConfig, prepare
from kdbg.errors import BadInput
from kdbg.trace.event import DropEvent


@dataclass
class Group:
    """Drops that share one cause."""

    key: str
    cause: dict[str, Any]
    example: DropEvent
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    note: str | None = None  # the ruleset changed since the drop, …


@dataclass
class Diagnosis:
    groups: list[Group]
    summary: Summary
    seconds: float
    cmd_status: int | None
    interrupted: bool


@dataclass
class Collector:
    """A watch sink that counts drops per cause; the ``watching`` line goes on ``err``."""

    err: Any
    groups: dict[str, Group] = field(default_factory=dict)

    def watching(self, message: str) -> None:
        self.err.write(message + "\n")
        self.err.flush()

    def drop(self, event: DropEvent) -> None:
        cause = event.cause or {"reason": event.reason, "summary": "no cause computed"}
        key = group_of(cause)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = Group(key, cause, dataclasses.replace(event, cause=None),
                                         first_ns=event.time_ns)
        g.count += 1
        g.last_ns = event.time_ns

    def stats(self, rows: list[StatsRow], summary: Summary, final: bool) -> None:
        pass

    def summary(self, summary: Summary) -> None:
        pass


def run(cfg: WatchConfig, err: Any) -> Diagnosis:
    """Watch with ``cfg`` (causes on, events streamed) until it ends, then group."""
    if cfg.stats:
        raise BadInput("kdbg diagnose counts per cause itself: --stats does not apply")
    cfg = dataclasses.replace(cfg, causes=True, events=False)
    watch = prepare(cfg)
    sink = Collector(err)
    start = time.monotonic()
    result = watch.run(sink)
    seconds = time.monotonic() - start
    groups = sorted(sink.groups.values(), key=lambda g: (-g.count, g.first_ns))
    if watch.causes is not None:
        for g in groups:
            g.note = watch.causes.recheck(g.cause)
    return Diagnosis(groups, result.summary, seconds, result.cmd_status, result.interrupted)


def _clock(time_ns: int) -> str:
    secs, ns = divmod(time_ns, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(secs)) + f".{ns // 1000:06d}"


def example_json(ev: DropEvent) -> dict[str, Any]:
    """The example packet of a group: addresses, ports, netns, interface, location."""
    rec = {k: v for k, v in ev.to_json().items()
           if k in ("time_ns", "proto", "family", "saddr", "daddr", "sport", "dport",
                    "icmp_type", "icmp_code", "netns", "ifname", "ifindex", "len",
                    "location", "comm", "pid")}
    return rec


def example_text(ev: DropEvent) -> str:
    icmp = ev.icmp_type is not None
    text = (f"{ev.proto or 'packet'} {endpoint(ev.saddr, ev.sport, icmp)} -> "
            f"{endpoint(ev.daddr, ev.dport, icmp)}")
    if icmp:
        text += f" (type {ev.icmp_type} code {ev.icmp_code})"
    text += f" on {ev.ifname or '-'}, netns {ev.netns or '-'}, at {ev.location}"
    return text


DETAILS = ("hook", "rule", "socket", "listeners", "facts", "candidates", "not_evaluated",
           "note", "netns", "netns_name")


def diagnosis_json(g: Group) -> dict[str, Any]:
    """The ``{"type": "diagnosis", ...}`` record of one cause (docs/diagnose.md)."""
    c = g.cause
    rec: dict[str, Any] = {
        "type": "diagnosis",
        "reason": c.get("reason", g.example.reason),
        "count": g.count,
        "first_seen_ns": g.first_ns,
        "last_seen_ns": g.last_ns,
        "established": c.get("established"),
        "cause": c.get("summary"),
        "meaning": c.get("meaning"),
        "usual_causes": c.get("usual_causes", []),
        "advice": c.get("advice"),
        "confirm": c.get("confirm"),
        "example": example_json(g.example),
    }
    rec.update({k: c[k] for k in DETAILS if k in c})
    if g.note:
        rec["ruleset_changed"] = g.note
    return rec


def report_text(d: Diagnosis) -> str:
    """The grouped report, most frequent cause first."""
    total = sum(g.count for g in d.groups)
    out = [f"kdbg: {total} drops, {len(d.groups)} "
           f"{'cause' if len(d.groups) == 1 else 'causes'}, in {d.seconds:.1f} s"
           + (f" ({d.summary.lost} more lost: raise --buffer-pages)" if d.summary.lost else "")]
    for g in d.groups:
        c = g.cause
        span = _clock(g.first_ns) + (f" .. {_clock(g.last_ns)}" if g.count > 1 else "")
        out.append("")
        out.append(f"{g.count:>6} x {c.get('reason', g.example.reason)}  ({span})")
        label = "cause" if c.get("established") is not False else "cause?"
        out.append(f"    {label + ':':<9}{c.get('summary')}")
        if c.get("hook"):
            out.append(f"    {'hook:':<9}{c['hook']}")
        for s in c.get("listeners", ()) if c.get("reason") == "NO_SOCKET" else ():
            out.append(f"    {'socket:':<9}{s['endpoint']} listens in the same netns")
        out.append(f"    {'example:':<9}{example_text(g.example)}")
        if c.get("summary") != c.get("meaning"):
            out.append(f"    {'meaning:':<9}{c.get('meaning')}")
        out.append(f"    {'advice:':<9}{c.get('advice')}")
        out.append(f"    {'confirm:':<9}{c.get('confirm')}")
        if g.note:
            out.append(f"    {'warning:':<9}{g.note}; the text shown is the rule that "
                       "decided at the drop")
    return "\n".join(out)


def report_json(d: Diagnosis) -> list[str]:
    recs = [diagnosis_json(g) for g in d.groups]
    recs.append({"type": "summary", "matched": d.summary.matched, "shown": d.summary.delivered,
                 "lost": d.summary.lost, "causes": len(d.groups),
                 "seconds": round(d.seconds, 3)})
    return [json.dumps(r, separators=(",", ":")) for r in recs]
