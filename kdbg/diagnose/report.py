"""``kdbg diagnose``'s report: one entry per cause, most frequent first, as text or as
``{"type": "diagnosis"}`` JSON lines (docs/diagnose.md)."""

from __future__ import annotations

import json
from typing import Any

from kdbg.diagnose.groups import Diagnosis, Group
from kdbg.drops import endpoint, more_json, more_line, wall_clock
from kdbg.trace.event import DropEvent


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
        "reason": c.reason,
        "count": g.count,
        "first_seen_ns": g.first_ns,
        "last_seen_ns": g.last_ns,
        "established": c.established,
        "cause": c.summary,
        "meaning": c.meaning,
        "usual_causes": list(c.usual_causes),
        "advice": c.advice,
        "confirm": c.confirm,
        "example": example_json(g.example),
    }
    details = c.to_json()
    rec.update({k: details[k] for k in DETAILS if k in details})
    if g.note:
        rec["ruleset_changed"] = g.note
    return rec


def report_text(d: Diagnosis) -> str:
    """The grouped report, most frequent cause first."""
    total = sum(g.count for g in d.groups)
    counted = sum(m.count for m in d.summarized)
    out = [f"kdbg: {total} drops, {len(d.groups)} "
           f"{'cause' if len(d.groups) == 1 else 'causes'}, in {d.seconds:.1f} s"
           + (f"; {counted:,} more counted in the kernel while kdbg was behind, causes not "
              "evaluated (last)" if counted else "")
           + (f" ({d.summary.lost} more lost: raise --buffer-pages)" if d.summary.lost else "")]
    for g in d.groups:
        c = g.cause
        span = wall_clock(g.first_ns) + (f" .. {wall_clock(g.last_ns)}" if g.count > 1 else "")
        out.append("")
        out.append(f"{g.count:>6} x {c.reason}  ({span})")
        label = "cause" if c.established is not False else "cause?"
        out.append(f"    {label + ':':<9}{c.summary}")
        if c.hook:
            out.append(f"    {'hook:':<9}{c.hook}")
        for s in c.listeners or () if c.reason == "NO_SOCKET" else ():
            out.append(f"    {'socket:':<9}{s.endpoint} listens in the same netns")
        out.append(f"    {'example:':<9}{example_text(g.example)}")
        if c.summary != c.meaning:
            out.append(f"    {'meaning:':<9}{c.meaning}")
        out.append(f"    {'advice:':<9}{c.advice}")
        out.append(f"    {'confirm:':<9}{c.confirm}")
        if g.note:
            out.append(f"    {'warning:':<9}{g.note}; the text shown is the rule that "
                       "decided at the drop")
    if d.summarized:
        out += ["", *map(more_line, d.summarized)]
    return "\n".join(out)


def report_json(d: Diagnosis) -> list[str]:
    recs = [diagnosis_json(g) for g in d.groups]
    recs.append({"type": "summary", "matched": d.summary.matched, "shown": d.summary.delivered,
                 "summarized": d.summary.summarized, "lost": d.summary.lost,
                 "causes": len(d.groups), "seconds": round(d.seconds, 3)})
    lines = [json.dumps(r, separators=(",", ":")) for r in recs]
    return lines[:-1] + [more_json(m) for m in d.summarized] + lines[-1:]
