"""Decide whether a breakpoint is safe on a transport; refuse with suggestions if not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kdbg.errors import BadInput, UnknownSymbol
from kdbg.guard.decision import TRANSPORTS, BreakpointRefused, Decision, Evidence
from kdbg.guard.facts import Finding, gather
from kdbg.guard.rules import ALLOW, NOT_TEXT, POLICY, TRANSPORT_HINTS
from kdbg.symbols.evidence import TargetSymbols
from kdbg.symbols.kallsyms import Location
from kdbg.transports import by_name


def locate(where: str | int, symbols: TargetSymbols) -> Location:
    """``SYM``, ``SYM+0xOFF``, ``0xADDR`` or an int → the breakpoint address, named."""
    if isinstance(where, int):
        return symbols.kallsyms.lookup(where)
    return symbols.kallsyms.lookup(symbols.kallsyms.resolve(where).start)


def check(where: str | int, *, transport: str, symbols: TargetSymbols,
          stack: Sequence[int] = (), force: bool = False) -> Decision:
    """The guard's decision for a breakpoint at ``where`` on ``transport``."""
    by_name(transport)  # BadInput for a transport kdbg does not know
    if symbols is None or getattr(symbols, "kallsyms", None) is None:
        raise BadInput("the guard needs the target's kallsyms",
                       hint="build TargetSymbols with local(), from_vmlinux(), from_parts() "
                            "or kdbg.targetfacts.LabFacts(name).symbols()")
    loc = locate(where, symbols)
    unavailable = tuple(f"{kind}: {why}" for kind, why in sorted(symbols.missing.items()))
    decision = replace(_decide(loc, transport, symbols), unavailable=unavailable)
    if decision.verdict != "refuse":
        return decision
    return replace(decision, suggestions=_suggest(loc, transport, symbols, stack), forced=force)


def enforce(decision: Decision) -> None:
    """Raise BreakpointRefused for a refused, unforced decision; otherwise return."""
    if decision.refused:
        raise BreakpointRefused(
            f"breakpoint at {decision.target} refused on {decision.transport}: {decision.why} "
            f"[rule {decision.rule}; {decision.evidence}]",
            hint="; ".join([*[s for s in decision.suggestions[:1] if "--force" not in s],
                            "--force overrides, at the risk of a hung session"]),
            decision=decision,
        )


def _decide(loc: Location, transport: str, symbols: TargetSymbols) -> Decision:
    if loc.symbol is None:
        ev = Evidence("none", f"0x{loc.address:x} is not in kernel or module text (kallsyms)"
                      + (" but in init text, which is freed after boot"
                         if _in_init_text(loc.address, symbols) else ""))
        return Decision(NOT_TEXT.verdict, transport, loc, NOT_TEXT.rule, NOT_TEXT.why, ev,
                        considered=(ev,))
    findings = gather(loc, symbols)
    considered = tuple(f.evidence for f in findings)
    actions = POLICY[transport]
    for verdict in ("refuse", "warn"):
        hits = [f for f in findings if f.category and actions.get(f.category)
                and actions[f.category].verdict == verdict]
        if hits:
            best: Finding = hits[0]  # findings are sorted strongest first
            assert best.category is not None
            act = actions[best.category]
            return Decision(act.verdict, transport, loc, act.rule, act.why, best.evidence,
                            considered=considered)
    allow = ALLOW[transport]
    return Decision(allow.verdict, transport, loc, allow.rule, allow.why, findings[0].evidence,
                    considered=considered)


def _suggest(loc: Location, transport: str, symbols: TargetSymbols,
             stack: Sequence[int]) -> tuple[str, ...]:
    out: list[str] = []
    for depth, addr in enumerate(stack):
        frame = symbols.kallsyms.lookup(addr)
        if frame.symbol is None or frame.symbol == loc.symbol:
            continue
        if _decide(frame, transport, symbols).verdict != "refuse":
            out.append(f"nearest safe frame of the captured stack: break at {frame} (frame "
                       f"#{depth}; a return address, so it stops when the callee returns)")
            break
    else:
        if stack:
            out.append("no frame of the captured stack is safe on " + transport)
    for other in TRANSPORTS:
        if other != transport and _decide(loc, other, symbols).verdict != "refuse":
            out.append(f"safe on {other}: {TRANSPORT_HINTS[other]}")
    out.append("--force sets it anyway: the session may hang, and the decision records "
               "forced=true")
    return tuple(out)


def _in_init_text(address: int, symbols: TargetSymbols) -> bool:
    try:
        lo = symbols.kallsyms.symbol("_sinittext").address
        hi = symbols.kallsyms.symbol("_einittext").address
    except UnknownSymbol:
        return False
    return lo <= address < hi
