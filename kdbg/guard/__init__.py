"""The breakpoint safety guard: no breakpoint kdbg sets may deadlock its transport.

Every breakpoint path (``kdbg watch --break``, ``kdbg gdb break``, gdb's
``kdbg-break``) calls :func:`check` before gdb inserts anything, then
:func:`enforce`, which raises :class:`kdbg.guard.decision.BreakpointRefused` for a refusal
that was not forced. Policy lives in :mod:`kdbg.guard.rules`; see docs/guard.md.
"""

from kdbg.guard.decision import EVIDENCE_KINDS, TRANSPORTS, Decision, Evidence, render
from kdbg.guard.judge import Guard
from kdbg.guard.policy import check, enforce, locate
from kdbg.symbols.evidence import TargetSymbols

__all__ = ["EVIDENCE_KINDS", "TRANSPORTS", "Decision", "Evidence", "Guard", "TargetSymbols",
           "check", "enforce", "locate", "render"]
