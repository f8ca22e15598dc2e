"""``kdbg diagnose``'s report: one entry per cause, most frequent first, as text or as
``{"type": "diagnosis"}`` JSON lines (docs/diagnose.md)."""

from __future__ import annotations

import json
from typing import Any

from kdbg.causes import Beside, NetnsCounters, beside, linked
from kdbg.diagnose.groups import Diagnosis, Group
from kdbg.drops import endpoint, more_json, more_line, wall_clock
from kdbg.trace.cause import Cause
from kdbg.trace.event import DropEvent
from kdbg.trace.headers import arp_op_name


def example_json(ev: DropEvent) -> dict[str, Any]:
    """The example packet of a group: addresses, ports, netns, interface, location."""
    rec = {k: v for k, v in ev.to_json().items()
           if k in ("time_ns", "proto", "family", "saddr", "daddr", "sport", "dport",
                    "icmp_type", "icmp_code", "arp_op", "netns", "ifname", "ifindex", "len",
                    "location", "comm", "pid")}
    return rec


def example_text(ev: DropEvent) -> str:
    icmp = ev.icmp_type is not None
    proto = ev.proto or "packet"
    if ev.arp_op is not None:
        proto = f"arp {arp_op_name(ev.arp_op)}"
    text = (f"{proto} {endpoint(ev.saddr, ev.sport, icmp)} -> "
            f"{endpoint(ev.daddr, ev.dport, icmp)}")
    if icmp:
        text += f" (type {ev.icmp_type} code {ev.icmp_code})"
    text += f" on {ev.ifname or '-'}, netns {ev.netns or '-'}, at {ev.location}"
    return text


DETAILS = ("hook", "rule", "socket", "listeners", "facts", "candidates", "not_evaluated",
           "note", "netns", "netns_name", "hooks", "dropped_by")


def hooks_text(c: Cause) -> list[str]:
    """The hook functions at the drop's hook, in the kernel's order, priority first; the
    one blamed marked."""
    hooks = c.hooks
    if hooks is None:
        return []
    more = f", {hooks.total - len(hooks.functions)} more" if hooks.total > len(
        hooks.functions) else ""
    out = [f"    {'hooks:':<9}{hooks.family} {hooks.hook}, from {hooks.source}{more}"
           + ("" if hooks.functions else ": none registered")]
    width = max((len(str(f.priority)) for f in hooks.functions), default=1)
    for f in hooks.functions:
        mark = "  <- dropped it" if f == c.dropped_by else ""
        out.append(f"{'':13}{f.priority:>{width}} {f.text}{mark}")
    return out


def counters_beside(d: Diagnosis, g: Group) -> list[Beside] | None:
    """The counters linked to ``g``'s reason that moved in its namespace, each with the
    other reasons dropped there that share it; None when that namespace's counters
    were not read (or the reason has no counter in the table)."""
    ns = _counters(d).get(g.example.netns or 0)
    if ns is None or ns.before is None or ns.after is None or not linked(g.cause.reason):
        return None
    seen = {o.cause.reason for o in d.groups if o.example.netns == g.example.netns}
    return beside(g.cause.reason, ns.deltas, seen)


def _counters(d: Diagnosis) -> dict[int, NetnsCounters]:
    return {ns.ref.inode: ns for ns in d.counters}


def counters_json(ns: NetnsCounters) -> dict[str, Any]:
    """The ``{"type": "counters"}`` record of one namespace: each counter that moved,
    before and after (or why they could not be read)."""
    rec: dict[str, Any] = {"type": "counters", "netns": ns.ref.inode}
    if ns.ref.name:
        rec["netns_name"] = ns.ref.name
    if ns.error:
        rec["error"] = ns.error
    if ns.before is not None and ns.after is not None:
        rec["moved"] = {n: {"before": ns.before[n], "after": ns.after[n]} for n in ns.deltas}
    return rec


def counters_text(ns: NetnsCounters) -> str:
    head = f"counters in netns {ns.ref.label}"
    if ns.before is None or ns.after is None:
        return f"{head}: not read ({ns.error})"
    deltas = ns.deltas
    if not deltas:
        return f"{head}: none moved"
    return f"{head}, moved: " + ", ".join(f"{n} {v:+,}" for n, v in deltas.items())


def diagnosis_json(g: Group, d: Diagnosis | None = None) -> dict[str, Any]:
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
    moved = counters_beside(d, g) if d is not None else None
    if moved is not None:
        rec["counters"] = [b.to_json() for b in moved]
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
            out.append(f"    {'hook:':<9}{c.hook}" + (f" ({c.note})" if c.note else ""))
        out += hooks_text(c)
        for s in c.listeners or () if c.reason == "NO_SOCKET" else ():
            out.append(f"    {'socket:':<9}{s.endpoint} listens in the same netns")
        out.append(f"    {'example:':<9}{example_text(g.example)}")
        moved = counters_beside(d, g)
        if moved is not None:
            out.append(f"    {'moved:':<9}" + (", ".join(b.text() for b in moved) or
                       "none of " + ", ".join(linked(c.reason))))
        if c.summary != c.meaning:
            out.append(f"    {'meaning:':<9}{c.meaning}")
        out.append(f"    {'advice:':<9}{c.advice}")
        out.append(f"    {'confirm:':<9}{c.confirm}")
        if g.note:
            out.append(f"    {'warning:':<9}{g.note}; the text shown is the rule that "
                       "decided at the drop")
    if d.summarized:
        out += ["", *map(more_line, d.summarized)]
    if d.counters:
        out += ["", *map(counters_text, d.counters)]
    return "\n".join(out)


def report_json(d: Diagnosis) -> list[str]:
    recs = [diagnosis_json(g, d) for g in d.groups]
    recs += [counters_json(ns) for ns in d.counters]
    recs.append({"type": "summary", "matched": d.summary.matched, "shown": d.summary.delivered,
                 "summarized": d.summary.summarized, "lost": d.summary.lost,
                 "causes": len(d.groups), "seconds": round(d.seconds, 3)})
    lines = [json.dumps(r, separators=(",", ":")) for r in recs]
    return lines[:-1] + [more_json(m) for m in d.summarized] + lines[-1:]
