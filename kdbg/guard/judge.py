"""The guard as a debug session holds it: one target, one decision per breakpoint,
failing closed.

A :class:`kdbg.debugger.Session` always has a :class:`Guard`. When the guard cannot
judge a breakpoint (it has no symbols of the target, or judging failed), the answer
is a refusal that says why (rule ``cannot-judge``), never silence; ``--force`` still
overrides it, and the decision records that it was forced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from kdbg.guard.decision import Decision, Evidence
from kdbg.guard.policy import check, enforce
from kdbg.symbols.bpfjit import JitedImage
from kdbg.symbols.evidence import TargetSymbols
from kdbg.symbols.kallsyms import Kallsyms, Location

log = logging.getLogger("kdbg.guard")

CANNOT_JUDGE = "cannot-judge"


class Guard:
    """Judges breakpoints on one target. ``symbols`` is the target's
    :class:`TargetSymbols`, or a function building it on first use; None when the
    target's symbols are unknown (then ``missing`` says why, and every breakpoint is
    refused)."""

    def __init__(
        self,
        symbols: TargetSymbols | Callable[[], TargetSymbols] | None,
        *,
        missing: str = "the target's kallsyms were not given",
    ) -> None:
        self._symbols = symbols
        self.missing = missing

    @property
    def symbols(self) -> TargetSymbols | None:
        """The target's symbols (built now if they were given as a function)."""
        if callable(self._symbols):
            self._symbols = self._symbols()
        return self._symbols

    def judge(self, addr: int, *, transport: str, stack: Sequence[int] = (),
              force: bool = False) -> Decision:
        """The guard's decision for a breakpoint at ``addr`` on ``transport``.

        Whatever stops the guard from judging becomes a refusal naming the reason.
        """
        try:
            symbols = self.symbols
        except Exception as err:  # noqa: BLE001 - any failure must refuse, not allow
            log.debug("guard symbols failed", exc_info=True)
            return cannot_judge(addr, transport, f"reading the target's symbols failed: "
                                                 f"{_describe(err)}", force=force)
        if symbols is None:
            return cannot_judge(addr, transport, self.missing, force=force)
        try:
            return check(addr, transport=transport, symbols=symbols, stack=stack, force=force)
        except Exception as err:  # noqa: BLE001 - any failure must refuse, not allow
            log.debug("guard check failed", exc_info=True)
            return cannot_judge(addr, transport, f"the guard failed: {_describe(err)}",
                                force=force)

    def use_kallsyms(self, kallsyms: Kallsyms) -> None:
        """The target's modules changed: judge from ``kallsyms`` from now on (symbols not
        built yet are read fresh when first needed)."""
        if isinstance(self._symbols, TargetSymbols):
            self._symbols.use_kallsyms(kallsyms)

    def add_jited(self, images: Sequence[JitedImage]) -> None:
        """Know the JITed BPF functions ``images`` (see :meth:`Kallsyms.add_jited`); a
        guard without symbols stays without, and refuses."""
        try:
            symbols = self.symbols
        except Exception:  # noqa: BLE001 - judge() says why, when asked
            return
        if symbols is not None:
            symbols.kallsyms.add_jited(images)

    def enforce(self, decision: Decision) -> None:
        """Raise BreakpointRefused for a refused decision that was not forced."""
        enforce(decision)

    def close(self) -> None:
        """Stop the helper processes the symbols started (addr2line)."""
        if isinstance(self._symbols, TargetSymbols):
            self._symbols.close()


def cannot_judge(addr: int, transport: str, reason: str, *, force: bool = False) -> Decision:
    """A refusal because the guard could not decide, with ``reason`` as its evidence."""
    evidence = Evidence("none", reason)
    return Decision(
        verdict="refuse",
        transport=transport,
        target=Location(addr, None, 0),
        rule=CANNOT_JUDGE,
        why=f"the guard cannot judge this breakpoint ({reason}), so it refuses it",
        evidence=evidence,
        suggestions=("give the target's kallsyms (--kallsyms FILE, or use --lab)",
                     "--force sets it anyway: the session may hang, and the decision "
                     "records forced=true"),
        forced=force,
        considered=(evidence,),
    )


def _describe(err: Exception) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
