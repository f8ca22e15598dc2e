"""``kdbg watch``: run the drop probe with filters and limits, feed a sink.

The tracer decides nothing about presentation: it hands decoded events, stats
snapshots and a summary to a :class:`Sink` (text or JSON lines, kdbg.cli).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from kdbg.causes import CauseFinder, stack_reasons, with_cause
from kdbg.drops.output import StatsRow, Summary, stats_rows
from kdbg.errors import BadInput, KdbgError
from kdbg.symbols import tpformat
from kdbg.symbols.droplines import DropLines, installed_module_debug, installed_vmlinux
from kdbg.symbols.kallsyms import Kallsyms, LiveKallsyms
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import filters as flt
from kdbg.trace import loop, offsets, program
from kdbg.trace.event import Decoder, DropEvent
from kdbg.trace.layout import RawDropEvent
from kdbg.trace.probe import TRACEPOINT, DropProbe, check_privileges
from kdbg.trace.program import ProgramOptions


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


class Sink(Protocol):
    """Where a watch reports to."""

    def watching(self, message: str) -> None: ...
    def drop(self, event: DropEvent) -> None: ...
    def stats(self, rows: list[StatsRow], summary: Summary, final: bool) -> None: ...
    def summary(self, summary: Summary) -> None: ...


@dataclass(frozen=True)
class WatchResult:
    summary: Summary
    rows: tuple[StatsRow, ...]
    cmd_status: int | None
    interrupted: bool


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
        # kallsyms takes a while to parse: do it beside the compile unless filters need it now.
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._ksyms: Future[Kallsyms] = self._pool.submit(LiveKallsyms)  # names follow module loads
        self.spec = cfg.filters.resolve(self.reasons, self.kallsyms)
        self.stats_only = cfg.stats and not cfg.events
        self.spec_is_early = flt.c_dev(self.spec) == flt.c_packet(self.spec) == flt.NO_FILTER
        # Causes are computed per cause key; some read the drop's stack (NETFILTER_DROP's:
        # the hook), so the program takes the stacks of those reasons only.
        self.causes = CauseFinder() if cfg.causes and not self.stats_only else None
        cause_stacks = self._stack_reasons() if self.causes is not None else ()
        self.text = program.build(
            program.kernel_args(), offsets.for_running_kernel(), self.spec,
            ProgramOptions(stack=cfg.stack or bool(cause_stacks),
                           stack_reasons=() if cfg.stack else cause_stacks,
                           stats_only=self.stats_only,
                           count_stats=cfg.stats,
                           ringbuf_pages=cfg.buffer_pages),
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

    def kallsyms(self) -> Kallsyms:
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
        if self.lines is not None and self.lines.error:
            sink.watching(f"kdbg: warning: file:line stopped: {self.lines.error}")
        if self.cfg.stats:
            sink.stats(turn.rows, turn.summary, True)
        sink.summary(turn.summary)
        return WatchResult(turn.summary, tuple(turn.rows), end.cmd_status, end.interrupted)

    def _matched(self, probe: DropProbe) -> int:
        """Drops that passed every filter, as the kernel counted them (no symbolizing)."""
        ctr = probe.counters()
        if not self.cfg.stats:
            return ctr["matched"]
        return sum(probe.stats().values()) + ctr["stats_full"]

    def _snapshot(self, probe: DropProbe, delivered: int) -> tuple[list[StatsRow], Summary]:
        ctr = probe.counters()
        counts = probe.stats() if self.cfg.stats else {}
        rows = stats_rows(counts, self.reasons.name, self.kallsyms().lookup)
        matched = sum(counts.values()) + ctr["stats_full"] if self.cfg.stats else ctr["matched"]
        # Under --stats with only reason/location filters the probe counts nothing but
        # the stats table (the cheapest path), so how many it looked at is unknown.
        fast = self.stats_only and self.spec_is_early
        summary = Summary(matched=matched, delivered=delivered,
                          lost=ctr["lost"], seen=None if fast else ctr["seen"],
                          stats_full=ctr["stats_full"], streaming=not self.stats_only)
        return rows, summary


class _WatchLoop(loop.RingLoop):
    """One run of a prepared :class:`Watch`: decode, annotate and deliver each drop."""

    probe: DropProbe

    def __init__(self, watch: Watch, sink: Sink) -> None:
        super().__init__(DropProbe(watch.text))
        self.watch, self.cfg, self.sink = watch, watch.cfg, sink
        self.decoder: Decoder | None = None
        self.delivered = 0
        self.next_stats = self.cfg.interval if self.cfg.interval else None
        self.rows: list[StatsRow] = []
        self.summary = Summary(0, 0, 0, 0)

    def on_event(self, raw: RawDropEvent) -> None:
        if self.ended:
            return
        w, probe = self.watch, self.probe
        if self.decoder is None:
            self.decoder = Decoder(w.reasons, w.kallsyms(),
                                   stack_of=probe.stack if self.cfg.stack else None)
        event = self.decoder.decode(raw)
        if w.causes is not None:
            event = with_cause(w.causes, event, raw.stack_id, probe, self.decoder)
        self.sink.drop(w.lines.annotate(event) if w.lines else event)
        self.delivered += 1
        if self.cfg.count is not None and self.delivered >= self.cfg.count:
            self.ended = True

    def attach(self) -> None:
        super().attach()
        w = self.watch
        lines = f", file:line from {w.lines.vmlinux}" if w.lines else ""
        self.sink.watching(
            f"kdbg: watching {TRACEPOINT} on Linux {os.uname().release} "
            f"(filters: {w.spec.describe()}{lines}); Ctrl-C to stop"
        )

    def tick(self, elapsed: float) -> None:
        cfg = self.cfg
        if self.watch.stats_only and cfg.count is not None:
            self.ended = self.watch._matched(self.probe) >= cfg.count
        if self.next_stats is not None and elapsed >= self.next_stats and cfg.stats:
            rows, summary = self.watch._snapshot(self.probe, self.delivered)
            self.sink.stats(rows, summary, False)
            self.next_stats += cfg.interval or 0

    def final(self) -> None:
        self.rows, self.summary = self.watch._snapshot(self.probe, self.delivered)

    def close(self) -> None:
        super().close()
        self.watch.close()


def prepare(cfg: WatchConfig) -> Watch:
    """Read the kernel's facts and build the program for ``cfg`` (no privileges needed
    beyond reading tracefs, BTF and kallsyms)."""
    return Watch(cfg)
