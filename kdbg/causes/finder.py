"""From a drop to its cause: the rule, the missing socket, the setting that decided.

:class:`CauseFinder` turns a decoded drop into a :class:`~kdbg.trace.cause.Cause`
(documented in docs/diagnose.md). It works per *cause key* (the reason and the few
fields that decide it, e.g. the netns, protocol, address and port for NO_SOCKET; see
:mod:`kdbg.causes.registry`), not per event: a key's answer is kept for ``ttl``
seconds, and the namespace reads behind it (``nft``, ``/proc/net``, sysctls, each
through ``nsenter``, all read-only) are shared between keys of the same namespace
for as long; the ruleset for as long as the namespace's nf_tables generation holds
(:func:`kdbg.causes.netfilter.ruleset`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from kdbg.causes import conntrack, netfilter
from kdbg.causes.notes import fill, notes_for
from kdbg.causes.reads import Drop, NetnsReads, TtlCache, not_established
from kdbg.causes.registry import cache_key, finder_for
from kdbg.errors import KdbgError
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.trace.cause import Cause
from kdbg.trace.event import DropEvent


class CauseFinder:
    """Causes for drops, computed once per cause key (and again after ``ttl`` s)."""

    def __init__(self, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 kallsyms: Callable[[], Kallsyms] | None = None, hooks: bool = False,
                 live: bool = False) -> None:
        self.reads = NetnsReads(ttl, clock, kallsyms)
        # list the hook functions at every netfilter drop (else only to blame one)
        self.reads.list_hooks = hooks
        if live:  # made before the watch attaches: conntrack's insert_failed before any
            # drop it will see, in kdbg's namespace and the named ones
            self.reads.insert_failed.baseline(conntrack.namespaces)
        self._causes = TtlCache(ttl, clock)
        self.computed = 0  # cause keys evaluated (not served from the cache)

    @staticmethod
    def needs_stack(reason: str) -> bool:
        """Whether the drop's kernel stack decides the cause (the hook, for netfilter)."""
        entry = finder_for(reason)
        return entry is not None and entry.stack is not None

    def cause(self, ev: DropEvent, stack: Sequence[str | None] | None = None) -> Cause:
        """The cause of ``ev``; ``stack``: its frames' symbols, innermost first (read only
        when the reason's cause needs them)."""
        def make() -> Cause:
            self.computed += 1
            return self._compute(ev, stack)
        return self._causes.get(cache_key(ev, stack), make)

    def _compute(self, ev: DropEvent, stack: Sequence[str | None] | None) -> Cause:
        notes = notes_for(ev.reason)
        cause = Cause(ev.reason, meaning=notes.meaning, usual_causes=notes.causes,
                      netns=ev.netns or None)
        ns = None
        try:
            if ev.netns:
                ns = self.reads.netns.get(ev.netns)
                if ns.name:
                    cause = replace(cause, netns_name=ns.name)
            entry = finder_for(ev.reason)
            if entry is not None and (ns is not None or not entry.needs_netns):
                cause = entry.find(self.reads, Drop(ev, ns, stack), cause)
        except KdbgError as err:
            cause = not_established(cause, err)
        values: dict[str, object] = {"ifname": ev.ifname, "saddr": ev.saddr, "daddr": ev.daddr,
                                     "sport": ev.sport, "dport": ev.dport, "proto": ev.proto,
                                     "reason": ev.reason}
        confirm = fill(notes.confirm, values)
        # a finder's own advice and command (a drop blamed on a hook function) stand
        return replace(cause, confirm=cause.confirm or (ns.shell(confirm) if ns is not None
                                                        else confirm),
                       advice=cause.advice or fill(notes.advice, values),
                       summary=cause.summary or notes.meaning)

    def recheck(self, cause: Cause) -> str | None:
        """Read the namespace's ruleset again: a note when the rule ``cause`` names was
        changed or deleted since the drop (its text in ``cause`` is the one that decided)."""
        return netfilter.recheck(self.reads, cause)


def with_cause(finder: CauseFinder, event: DropEvent,
               stack: Callable[[], Sequence[str | None] | None]) -> DropEvent:
    """``event`` with its cause; ``stack()`` (the symbols of the drop's frames, innermost
    first, or None when none were captured) is called only when the reason needs them."""
    symbols = stack() if finder.needs_stack(event.reason) else None
    return _replaced(event, finder.cause(event, symbols))


def _replaced(event: DropEvent, cause: Cause) -> DropEvent:
    """``dataclasses.replace(event, cause=cause)`` without re-running ``__init__`` over 28
    fields (50 µs a drop on a busy machine, against 2 µs): a new frozen event."""
    new = object.__new__(DropEvent)
    new.__dict__.update(event.__dict__, cause=cause)
    return new
