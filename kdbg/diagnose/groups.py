"""``kdbg diagnose``: watch drops for a while, then report them grouped by cause.

The watch is ``kdbg watch``'s (same filters, same ``kdbg: watching`` line); each
drop gets its cause from :class:`kdbg.causes.CauseFinder`, and drops with the
same cause (the same rule, the same missing socket, the same setting) are counted
together: count, first and last seen, one example packet, the cause and the advice,
most frequent first. Before the report, every named rule is read again: a rule
changed or deleted since the drop is said so, with the text that decided.

The namespaces' SNMP and netstat counters are read once the program is attached
and again at the end; the report puts beside each reason the counters linked to it
(:data:`kdbg.causes.LINKS`) that moved in the drop's namespace.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from kdbg.causes import NetnsCounters, namespaces
from kdbg.drops import StatsRow, Summary, WatchConfig, prepare
from kdbg.errors import BadInput
from kdbg.trace.cause import Cause
from kdbg.trace.event import DropEvent
from kdbg.trace.filters import parse_netns
from kdbg.trace.more import Summarized


@dataclass
class Group:
    """Drops that share one cause."""

    key: str
    cause: Cause
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
    # drops the kernel counted while kdbg was behind: no cause was evaluated for them
    summarized: list[Summarized] = field(default_factory=list)
    # the namespaces' SNMP/netstat counters, read once attached and at the end
    counters: list[NetnsCounters] = field(default_factory=list)


@dataclass
class Collector:
    """A watch sink that counts drops per cause; the ``watching`` line goes on ``err``."""

    err: Any
    groups: dict[str, Group] = field(default_factory=dict)
    summarized: list[Summarized] = field(default_factory=list)  # counted, not sent
    counters: list[NetnsCounters] = field(default_factory=list)  # read once attached
    attached: bool = False

    def watching(self, message: str) -> None:
        if not self.attached:  # the first line is 'kdbg: watching': the program runs
            self.attached = True
            for ns in self.counters:
                ns.read("before")
        self.err.write(message + "\n")
        self.err.flush()

    def drop(self, event: DropEvent) -> None:
        cause = event.cause or Cause(event.reason, summary="no cause computed")
        key = cause.group
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = Group(key, cause, dataclasses.replace(event, cause=None),
                                         first_ns=event.time_ns)
        g.count += 1
        g.last_ns = event.time_ns

    def more(self, summarized: Summarized) -> None:
        self.summarized.append(summarized)

    def flush(self) -> None:
        pass

    def stats(self, rows: list[StatsRow], summary: Summary, final: bool) -> None:
        pass

    def summary(self, summary: Summary) -> None:
        pass


def run(cfg: WatchConfig, err: Any) -> Diagnosis:
    """Watch with ``cfg`` (causes on, events streamed) until it ends, then group."""
    if cfg.stats:
        raise BadInput("kdbg diagnose counts per cause itself: --stats does not apply")
    cfg = dataclasses.replace(cfg, causes=True, events=False, hooks=True)
    watch = prepare(cfg)
    netns = cfg.filters.netns
    sink = Collector(err, counters=namespaces(parse_netns(netns) if netns else None))
    start = time.monotonic()
    result = watch.run(sink)
    seconds = time.monotonic() - start
    for ns in sink.counters:
        if ns.before is not None:
            ns.read("after")
    groups = sorted(sink.groups.values(), key=lambda g: (-g.count, g.first_ns))
    if watch.causes is not None:
        for g in groups:
            g.note = watch.causes.recheck(g.cause)
    return Diagnosis(groups, result.summary, seconds, result.cmd_status, result.interrupted,
                     sink.summarized, sink.counters)
