"""The guard's answer: a frozen decision with its rule, evidence and suggestions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdbg import transports
from kdbg.errors import KdbgError
from kdbg.symbols.kallsyms import Location

TRANSPORTS = transports.NAMES  # gdbstub, kgdboc, kgdboe: kdbg.transports is the one list

# Strongest first. "section" (kallsyms section markers such as __noinstr_text_start)
# sits next to the blocklist: it is the input the kernel builds that blocklist from.
EVIDENCE_KINDS = ("dwarf", "module", "blocklist", "section", "btf", "name", "none")


@dataclass(frozen=True)
class Evidence:
    """One fact the guard used: its kind (see EVIDENCE_KINDS) and the concrete fact."""

    kind: str
    fact: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.fact}"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "fact": self.fact}


@dataclass(frozen=True)
class Decision:
    """Whether a breakpoint at ``target`` is safe on ``transport``, and why."""

    verdict: str
    transport: str
    target: Location
    rule: str
    why: str
    evidence: Evidence
    suggestions: tuple[str, ...] = ()
    forced: bool = False
    considered: tuple[Evidence, ...] = ()
    unavailable: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        """True when the breakpoint must not be set (refused and not forced)."""
        return self.verdict == "refuse" and not self.forced

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; addresses as hex strings."""
        t = self.target
        return {
            "verdict": self.verdict,
            "transport": self.transport,
            "target": {"address": f"0x{t.address:x}", "symbol": t.symbol, "offset": t.offset,
                       "module": t.module, "text": str(t)},
            "rule": self.rule,
            "why": self.why,
            "evidence": self.evidence.to_json(),
            "suggestions": list(self.suggestions),
            "forced": self.forced,
            "considered": [e.to_json() for e in self.considered],
            "unavailable": list(self.unavailable),
        }


def render(decision: Decision) -> str:
    """Human-readable lines for a decision, as ``kdbg guard check`` prints them."""
    d = decision
    head = f"{d.verdict}: {d.target} (0x{d.target.address:x}) on {d.transport}"
    lines = [head, f"  rule:     {d.rule}", f"  why:      {d.why}", f"  evidence: {d.evidence}"]
    others = [e for e in d.considered if e != d.evidence]
    for ev in others:
        lines.append(f"  also:     {ev}")
    for note in d.unavailable:
        lines.append(f"  no data:  {note}")
    for s in d.suggestions:
        lines.append(f"  suggest:  {s}")
    if d.forced:
        lines.append("  FORCED:   refused breakpoint set anyway with --force; the session may hang")
    return "\n".join(lines)


class BreakpointRefused(KdbgError):
    """The safety guard refused a breakpoint. ``decision`` is the guard's Decision (raised
    by the guard, so it lives here: :mod:`kdbg.errors` imports no room)."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None,
                 decision: Decision | None = None) -> None:
        super().__init__(message, hint=hint)
        self.decision = decision
