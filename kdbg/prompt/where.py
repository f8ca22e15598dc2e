"""What gdb's ``kdbg-where`` prints: the drop that armed this breakpoint, the stop,
and kdbg's breakpoints with the guard's decision for each, from kdbg's state."""

from __future__ import annotations

import datetime
from collections.abc import Collection

from kdbg.prompt.state import PromptState
from kdbg.trace.event import DropEvent


def _when(time_ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(time_ns / 1e9)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def drop_lines(ev: DropEvent) -> list[str]:
    """The drop record in rows: time, reason, location, addresses, netns, interface,
    process, cause."""
    where = ev.location + (f" ({ev.file}:{ev.line})" if ev.file else "")
    rows = [("time", _when(ev.time_ns)), ("reason", ev.reason), ("location", where)]
    if ev.saddr is not None:
        src = f"{ev.saddr}:{ev.sport}" if ev.sport is not None else str(ev.saddr)
        dst = f"{ev.daddr}:{ev.dport}" if ev.dport is not None else str(ev.daddr)
        rows.append(("packet", f"{ev.proto or '?'} {src} -> {dst}, len {ev.len}"))
    rows.append(("netns", str(ev.netns) if ev.netns is not None else "?"))
    dev = ev.ifname or "?"
    rows.append(("interface", dev + (f" (ifindex {ev.ifindex})" if ev.ifindex else "")))
    rows.append(("process", f"{ev.comm} (pid {ev.pid}) on cpu {ev.cpu}"))
    rows.append(("skb", f"0x{ev.skb:x}"))
    if ev.cause is not None:
        rows.append(("cause", (ev.cause.rule.label if ev.cause.rule is not None
                               else ev.cause.text) or ev.cause.reason))
    return [f"  {name:<10} {value}" for name, value in rows]


def describe(state: PromptState, in_gdb: Collection[int] = ()) -> list[str]:
    """The lines ``kdbg-where`` prints; ``in_gdb``: the breakpoint numbers gdb has."""
    lines: list[str] = []
    if state.armed_by is not None:
        lines.append("the drop that armed the breakpoint:")
        lines += drop_lines(state.armed_by)
    else:
        lines.append("no drop armed a breakpoint in this session")
    stop = state.stop
    if stop is not None:
        call = f", at the call to {stop.callee}" if stop.callee else ""
        skb = f"; skb 0x{stop.skb:x}" if stop.skb is not None else ""
        reason = f", reason {stop.reason}" if stop.reason else ""
        lines.append(f"stopped at {stop.name}{call}{skb}{reason}")
    via = f" on {state.endpoint}" if state.endpoint else ""
    lines.append(f"kdbg's breakpoints ({state.transport or 'transport unknown'}{via}):"
                 if state.breakpoints else "kdbg set no breakpoint")
    for bp in state.breakpoints:
        place = f"{bp.label} (0x{bp.address:x})" if bp.label else f"0x{bp.address:x}"
        here = "" if bp.number in in_gdb else "  [no longer in gdb]"
        lines.append(f"  {bp.number:<3} {place}{here}")
        d = bp.decision
        if d is None:
            lines.append("      guard: no decision recorded")
            continue
        forced = " (FORCED)" if d.forced else ""
        lines.append(f"      guard: {d.verdict}{forced}, rule {d.rule}: {d.why}")
    return lines
