"""A journey as text: one line per hop, oldest first, with what changed since the hop
before; the same lines under a drop (``kdbg watch --journey``), in a ``--break`` hit
report and at gdb's prompt (``kdbg-journey``)."""

from __future__ import annotations

from kdbg.trace.journey import DROP, Journey, JourneyHop, changes


def _netns(inode: object, name: str | None) -> str:
    return "-" if inode is None else f"{inode}" + (f" ({name})" if name else "")


def _change(hop: JourneyHop, field: str, before: object, after: object,
            prev: JourneyHop) -> str:
    if field == "netns":
        return f"netns {prev.netns_name or before} -> {hop.netns_name or after}"
    if field == "ifname":
        return f"device {before or '-'} -> {after or '-'}" + (f" ({hop.kind})" if hop.kind else "")
    return f"{field} {before} -> {after}"


def what_changed(prev: JourneyHop, hop: JourneyHop) -> str:
    """``netns a -> b, device veth-a -> veth-b (veth), daddr 10.0.0.1 -> 10.0.0.9``."""
    return ", ".join(_change(hop, f, b, a, prev) for f, b, a in changes(prev, hop))


def hop_line(hop: JourneyHop, prev: JourneyHop | None) -> str:
    """``-0.105ms  NETNS (name)  IF  KIND  POINT  packet, or what changed``."""
    text = hop.headers.summary() if prev is None else what_changed(prev, hop)
    point = hop.point.split(":", 1)[-1]
    when = f"-{hop.before_ns / 1e6:.3f}ms"
    return (f"{when:>11}  {_netns(hop.netns, hop.netns_name):<26} {hop.ifname or '-':<12} "
            f"{hop.kind or '':<7} {point:<26} {text}".rstrip())


def journey_lines(journey: Journey) -> list[str]:
    """The title, a line per hop, and a line per note when it is incomplete."""
    ref = "the drop" if journey.reference == DROP else "its last hop"
    if journey.hops:
        count = len(journey.hops)
        lines = [f"journey ({count} hop{'s' if count != 1 else ''}, oldest first; "
                 f"time before {ref}):"]
    else:
        lines = ["journey: no hops"]
    prev = None
    for hop in journey.hops:
        lines.append("  " + hop_line(hop, prev))
        prev = hop
    lines += [f"  incomplete: {note}" for note in journey.notes]
    return lines
