"""``kdbg watch``: run the drop probe with filters and limits, feed a sink.

The tracer decides nothing about presentation: it hands decoded events, stats
snapshots and a summary to a :class:`Sink` (text or JSON lines, kdbg.cli).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from kdbg.causes import CauseFinder, stack_reasons, with_cause
from kdbg.drops.chains import Learner
from kdbg.drops.journeys import JourneyDropProbe, Journeys
from kdbg.drops.output import StatsRow, Summary, stats_rows
from kdbg.errors import BadInput, KdbgError
from kdbg.symbols import tpformat
from kdbg.symbols.droplines import DropLines, installed_module_debug, installed_vmlinux
from kdbg.symbols.kallsyms import Kallsyms, LiveKallsyms
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import filters as flt
from kdbg.trace import loop, more, offsets, program
from kdbg.trace.event import Decoder, DropEvent, from_drop
from kdbg.trace.journeylayout import RawJourneyDrop
from kdbg.trace.layout import RawDropEvent
from kdbg.trace.more import MoreCounts, Summarized
from kdbg.trace.probe import TRACEPOINT, DropProbe, check_privileges, per_cpu_u64
from kdbg.trace.program import ProgramOptions

MORE_EVERY = 1.0  # seconds between looks at what the kernel counted instead of sending


@dataclass(frozen=True)
class WatchConfig:
    """Everything ``kdbg watch`` was asked for, before any kernel lookup."""

    filters: flt.PacketFilters = flt.PacketFilters()
    stack: bool = False
    stats: bool = False
    interval: float | None = None
    count: int | None = None
    duration: float | None = None
    cmd: str | None = None
    buffer_pages: int = 256
    events: bool = False  # with stats: stream each drop as well
    vmlinux: str | None = None  # DWARF for file:line; None: the distribution's, if installed
    causes: bool = True  # a cause on each streamed drop (kdbg.causes)
    # The hook functions at every NETFILTER_DROP's hook on its cause (kdbg diagnose);
    # otherwise they are read only to blame a drop no nftables rule made.
    hooks: bool = False
    # each drop's journey: the hops its packet crossed before; None: the run's default,
    # on for --break (breakwatch.run: the stopped packet's journey), off otherwise
    journey: bool | None = None
    journey_slots: int = 1024  # packets followed at once (a power of two)
    # Take each drop's stack as well as its learned call chain, and show it (kernel tests
    # check that both give the same cause).
    check_chains: bool = False


class Sink(Protocol):
    """Where a watch reports to."""

    def watching(self, message: str) -> None: ...
    def drop(self, event: DropEvent) -> None: ...
    def more(self, summarized: Summarized) -> None: ...
    def flush(self) -> None: ...
    def stats(self, rows: list[StatsRow], summary: Summary, final: bool) -> None: ...
    def summary(self, summary: Summary) -> None: ...


@dataclass(frozen=True)
class WatchResult:
    summary: Summary
    rows: tuple[StatsRow, ...]
    cmd_status: int | None
    interrupted: bool
    chain_hits: int = 0  # drops whose cause read its frames off a learned call chain
    chains: int = 0  # call chains learned


class Watch:
    """A prepared watch: kernel facts read, filters resolved, program text built."""

    def __init__(self, cfg: WatchConfig) -> None:
        loop.check_limits(cfg.count, cfg.duration)
        if cfg.interval is not None and cfg.interval <= 0:
            raise BadInput("--interval must be positive")
        loop.check_pages(cfg.buffer_pages)
        self.cfg = cfg
        check_privileges()
        self.tp = tpformat.load("skb", "kfree_skb")
        self.reasons = ReasonTable.from_tpformat(self.tp)
        # kallsyms takes 0.3 s to parse: read in a thread once the watch is attached (or
        # now, when a filter needs it), off the way to 'kdbg: watching'.
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._ksyms: Future[Kallsyms] | None = None
        self.spec = cfg.filters.resolve(self.reasons, self.kallsyms)
        self.stats_only = cfg.stats and not cfg.events
        self.spec_is_early = flt.c_dev(self.spec) == flt.c_packet(self.spec) == flt.NO_FILTER
        # Causes are computed per cause key; some read the drop's stack (NETFILTER_DROP's:
        # the hook), so the program takes the stacks of those reasons only.
        self.causes = (CauseFinder(kallsyms=self.kallsyms, hooks=cfg.hooks, live=True)
                       if cfg.causes and not self.stats_only else None)
        cause_stacks = self._stack_reasons() if self.causes is not None else ()
        if cfg.journey and self.stats_only:
            raise BadInput("--journey does nothing with --stats alone (add --events)")
        self.journeys = Journeys(self.spec, cfg.journey_slots) if cfg.journey else None
        # Their frames are read off the stack where a learned call chain says they are;
        # only --stack, which shows every frame, walks every stack.
        self.chains = bool(cause_stacks) and not cfg.stack
        self.text = program.build(
            program.kernel_args(), offsets.for_running_kernel(), self.spec,
            ProgramOptions(stack=cfg.stack or bool(cause_stacks),
                           stack_reasons=() if cfg.stack else cause_stacks,
                           chains=self.chains, chain_check=cfg.check_chains,
                           stats_only=self.stats_only, count_stats=cfg.stats,
                           summarize=not self.stats_only, ringbuf_pages=cfg.buffer_pages,
                           **(self.journeys.program_options() if self.journeys else {})),
        )
        self.lines = None if self.stats_only else self._lines(cfg.vmlinux)

    def _stack_reasons(self) -> tuple[int, ...]:
        """The codes of the reasons whose causes read the stack, as this kernel numbers
        them; none when it has none of them (then the causes need no stack at all)."""
        wanted = stack_reasons()
        return tuple(r.code for r in self.reasons if r.name in wanted)

    def _lines(self, vmlinux: str | None) -> DropLines | None:
        """file:line from ``vmlinux`` (its errors are the user's to see), else from the
        distribution's debug vmlinux when one is installed and matches."""
        with open("/proc/version") as f:
            version = f.read()
        modules = installed_module_debug(os.uname().release)
        if vmlinux is not None:
            return DropLines(vmlinux, self.kallsyms, version, modules)
        found = installed_vmlinux(os.uname().release)
        if found is None:
            return None
        try:
            return DropLines(found, self.kallsyms, version, modules)
        except KdbgError:
            return None

    def read_kallsyms(self) -> None:
        """Start reading kallsyms in the background (names follow module loads)."""
        if self._ksyms is None:
            self._ksyms = self._pool.submit(LiveKallsyms)

    def kallsyms(self) -> Kallsyms:
        self.read_kallsyms()
        assert self._ksyms is not None
        return self._ksyms.result()

    def close(self) -> None:
        """Stop the kallsyms reader; close the DWARF reader."""
        self._pool.shutdown(wait=False)
        if self.lines is not None:
            self.lines.close()

    def run(self, sink: Sink) -> WatchResult:
        """Attach, report until a stop condition, detach. Ctrl-C/SIGTERM end it cleanly."""
        turn = _WatchLoop(self, sink)
        end = loop.run(turn, cmd=self.cfg.cmd, duration=self.cfg.duration)
        if turn.journeys_line:
            sink.watching(turn.journeys_line)
        if self.lines is not None and self.lines.error:
            sink.watching(f"kdbg: warning: file:line stopped: {self.lines.error}")
        if self.cfg.stats:
            sink.stats(turn.rows, turn.summary, True)
        sink.summary(turn.summary)
        learner = turn.learner
        return WatchResult(turn.summary, tuple(turn.rows), end.cmd_status, end.interrupted,
                           learner.hits if learner else 0,
                           len(learner.book.by_id) if learner else 0)

    def _matched(self, probe: DropProbe) -> int:
        """Drops that passed every filter, as the kernel counted them (no symbolizing)."""
        ctr = probe.counters()
        if not self.cfg.stats:
            return ctr["matched"]
        return sum(probe.stats().values()) + ctr["stats_full"]

    def _snapshot(self, probe: DropProbe, delivered: int, summarized: int = 0
                  ) -> tuple[list[StatsRow], Summary]:
        ctr = probe.counters()
        counts = probe.stats() if self.cfg.stats else {}
        rows = stats_rows(counts, self.reasons.name, self.kallsyms().lookup)
        matched = sum(counts.values()) + ctr["stats_full"] if self.cfg.stats else ctr["matched"]
        # Under --stats with only reason/location filters the probe counts nothing but
        # the stats table (the cheapest path), so how many it looked at is unknown.
        fast = self.stats_only and self.spec_is_early
        summary = Summary(matched=matched, delivered=delivered,
                          lost=ctr["lost"], seen=None if fast else ctr["seen"],
                          stats_full=ctr["stats_full"], streaming=not self.stats_only,
                          summarized=summarized)
        return rows, summary


class _WatchLoop(loop.RingLoop):
    """One run of a prepared :class:`Watch`: decode, annotate and deliver each drop."""

    probe: DropProbe

    def __init__(self, watch: Watch, sink: Sink) -> None:
        j = watch.journeys
        super().__init__(j.probe(watch.text) if j is not None else DropProbe(watch.text))
        self.journeys_line = ""
        self.watch, self.cfg, self.sink = watch, watch.cfg, sink
        self.decoder: Decoder | None = None
        self.delivered = 0
        self.next_stats = self.cfg.interval if self.cfg.interval else None
        self.rows: list[StatsRow] = []
        self.summary = Summary(0, 0, 0, 0)
        self.more = None if watch.stats_only else MoreCounts(self._counted)
        self.next_more = MORE_EVERY
        self.learner = (Learner(self.probe, watch.reasons.name, watch.kallsyms)
                        if watch.chains else None)

    def _counted(self, table: str) -> list[tuple[bytes, int]]:
        """A per-key table of the drops a full ring had no room for, summed over CPUs."""
        return [(key, sum(per_cpu_u64(value))) for key, value in self.probe.items(table)]

    def report_more(self) -> None:
        """A "more" record for each key the kernel counted drops under since the last."""
        if self.more is None:
            return
        w = self.watch
        for key, count in self.more.new():
            self.sink.more(more.decode(key, count, w.reasons.name, w.kallsyms().lookup))

    def on_event(self, raw: RawDropEvent | RawJourneyDrop) -> None:
        if self.ended:
            return
        w, probe = self.watch, self.probe
        if self.decoder is None:
            shown = self.cfg.stack or self.cfg.check_chains
            self.decoder = Decoder(  # the journey's clock, so hops and drops compare
                w.reasons, w.kallsyms(), stack_of=probe.stack if shown else None,
                wall_offset_ns=w.journeys.wall_offset_ns if w.journeys is not None else None)
        drop = raw.ev if isinstance(raw, RawJourneyDrop) else raw
        event = self.decoder.decode(drop)
        if w.causes is not None:
            event = with_cause(w.causes, event, lambda: self._frames(drop, event))
        if w.journeys is not None and isinstance(raw, RawJourneyDrop):
            event = w.journeys.add(event, raw)
        self.sink.drop(w.lines.annotate(event) if w.lines else event)
        self.delivered += 1
        if self.cfg.count is not None and self.delivered >= self.cfg.count:
            self.ended = True

    def _frames(self, raw: RawDropEvent, event: DropEvent) -> list[str | None] | None:
        """The symbols of the drop's frames its cause reads: from its learned chain, or
        from its own stack."""
        if raw.chain and self.learner is not None:
            return self.learner.symbols(raw.chain)
        if event.stack is not None:
            return [f.symbol for f in event.stack]
        if raw.stack_id < 0:
            return None
        addrs = from_drop(self.probe.stack(raw.stack_id), raw.location)
        return self.learner.name(addrs) if self.learner is not None else [
            self.watch.kallsyms().lookup(a).symbol for a in addrs]

    def step(self) -> None:
        super().step()
        if self.learner is not None:
            self.probe.learned(self.learner.take)
        self.sink.flush()

    def attach(self) -> None:
        w = self.watch
        if not w.stats_only and not self.probe.cached():
            # bcc compiles in a child for seconds (tens in a lab guest's first run): the
            # symbols the first drop is named with are read meanwhile
            w.read_kallsyms()
        super().attach()
        if w.journeys is not None:
            w.journeys.attached()
        lines = f", file:line from {w.lines.vmlinux}" if w.lines else ""
        self.sink.watching(
            f"kdbg: watching {TRACEPOINT} on Linux {os.uname().release} "
            f"(filters: {w.spec.describe()}{lines}); Ctrl-C to stop"
        )
        if not w.stats_only:
            w.read_kallsyms()  # the first drop is named with it

    def tick(self, elapsed: float) -> None:
        cfg = self.cfg
        if self.watch.stats_only and cfg.count is not None:
            self.ended = self.watch._matched(self.probe) >= cfg.count
        if self.next_stats is not None and elapsed >= self.next_stats and cfg.stats:
            rows, summary = self.watch._snapshot(self.probe, self.delivered, self._summarized)
            self.sink.stats(rows, summary, False)
            self.next_stats += cfg.interval or 0
        if elapsed >= self.next_more:
            self.report_more()
            self.next_more = elapsed + MORE_EVERY
            if self.watch.journeys is not None and isinstance(self.probe, JourneyDropProbe):
                self.watch.journeys.storm(self.probe, self._summarized)

    @property
    def _summarized(self) -> int:
        return self.more.total if self.more is not None else 0

    def final(self) -> None:
        self.sink.flush()
        self.report_more()
        self.rows, self.summary = self.watch._snapshot(self.probe, self.delivered,
                                                       self._summarized)
        if self.watch.journeys is not None and isinstance(self.probe, JourneyDropProbe):
            self.journeys_line = self.watch.journeys.summary(self.probe)

    def close(self) -> None:
        super().close()
        self.watch.close()


def recorded_causes() -> Callable[[DropEvent], DropEvent]:
    """Each drop given its cause as a watch gives it, from the drop record alone (a
    recording keeps no stack, so a NETFILTER_DROP's hook is unknown and every hook is
    evaluated); for the pcapng written at the end of a local recording."""
    finder = CauseFinder()
    return lambda ev: with_cause(finder, ev, lambda: None)


def prepare(cfg: WatchConfig) -> Watch:
    """Read the kernel's facts and build the program for ``cfg`` (no privileges needed
    beyond reading tracefs, BTF and kallsyms)."""
    return Watch(cfg)
