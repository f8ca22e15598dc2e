"""``kdbg watch``: run the drop probe with filters and limits, feed a sink.

The tracer decides nothing about presentation: it hands decoded events, stats
snapshots and a summary to a :class:`Sink` (text or JSON lines, kdbg.cli).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from kdbg.drops.causes import CauseFinder, with_cause
from kdbg.errors import BadInput, KdbgError
from kdbg.report import StatsRow, Summary, stats_rows
from kdbg.signals import StopSignals
from kdbg.symbols.droplines import DropLines, installed_module_debug, installed_vmlinux
from kdbg.symbols.kallsyms import Kallsyms, LiveKallsyms
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import filters as flt
from kdbg.trace import offsets, tpformat
from kdbg.trace.event import Decoder, DropEvent
from kdbg.trace.layout import RawDropEvent
from kdbg.trace.probe import TRACEPOINT, DropProbe, check_privileges
from kdbg.trace.program import ProgramOptions, build
from kdbg.workload import Workload


@dataclass(frozen=True)
class WatchConfig:
    """Everything ``kdbg watch`` was asked for, before any kernel lookup."""

    reasons: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    proto: str | None = None
    saddrs: tuple[str, ...] = ()
    daddrs: tuple[str, ...] = ()
    addrs: tuple[str, ...] = ()
    sports: tuple[int, ...] = ()
    dports: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    netns: str | None = None
    ifname: str | None = None
    stack: bool = False
    stats: bool = False
    interval: float | None = None
    count: int | None = None
    duration: float | None = None
    cmd: str | None = None
    buffer_pages: int = 256
    events: bool = False  # with stats: stream each drop as well
    vmlinux: str | None = None  # DWARF for file:line; None: the distribution's, if installed
    causes: bool = True  # a cause on each streamed drop (kdbg.drops.causes)


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


def filter_spec(cfg: WatchConfig, reasons: ReasonTable, ksyms: Callable[[], Kallsyms]
                ) -> flt.FilterSpec:
    """Resolve names (reasons, symbols, namespaces) into what the kernel compares."""
    labels: list[str] = []
    codes = []
    for name in cfg.reasons:
        codes.append(reasons.code(name))
        labels.append(f"reason={reasons.name(codes[-1])}")
    ranges = []
    for loc in cfg.locations:
        ranges.append(ksyms().resolve(loc))
        labels.append(f"location={ranges[-1].label}")
    if cfg.proto is not None:
        if cfg.proto not in flt.PROTOCOLS:
            raise BadInput(f"unknown protocol {cfg.proto!r}",
                           hint="one of " + ", ".join(flt.PROTOCOLS))
        labels.append(f"proto={cfg.proto}")

    def nets(key: str, values: tuple[str, ...]) -> tuple[flt.IPNetwork, ...]:
        out = tuple(flt.parse_network(v) for v in values)
        labels.extend(f"{key}={n}" for n in out)
        return out

    def ports(key: str, values: tuple[int, ...]) -> tuple[int, ...]:
        out = tuple(flt.parse_port(v) for v in values)
        labels.extend(f"{key}={p}" for p in out)
        return out

    netns = flt.parse_netns(cfg.netns) if cfg.netns is not None else None
    if netns is not None:
        labels.append(f"netns={netns}")
    ifname = flt.parse_ifname(cfg.ifname) if cfg.ifname is not None else None
    if ifname is not None:
        labels.append(f"ifname={ifname}")
    return flt.FilterSpec(
        reasons=tuple(codes), locations=tuple(ranges), proto=cfg.proto,
        saddrs=nets("saddr", cfg.saddrs), daddrs=nets("daddr", cfg.daddrs),
        addrs=nets("addr", cfg.addrs), sports=ports("sport", cfg.sports),
        dports=ports("dport", cfg.dports), ports=ports("port", cfg.ports),
        netns=netns, ifname=ifname, labels=tuple(labels),
    )


class Watch:
    """A prepared watch: kernel facts read, filters resolved, program text built."""

    def __init__(self, cfg: WatchConfig) -> None:
        if cfg.count is not None and cfg.count <= 0:
            raise BadInput("--count must be positive")
        if cfg.duration is not None and cfg.duration <= 0:
            raise BadInput("--duration must be positive")
        if cfg.interval is not None and cfg.interval <= 0:
            raise BadInput("--interval must be positive")
        pages = cfg.buffer_pages
        if pages <= 0 or pages & (pages - 1):
            raise BadInput("--buffer-pages must be a power of two")
        self.cfg = cfg
        check_privileges()
        self.tp = tpformat.load("skb", "kfree_skb")
        self.reasons = ReasonTable.from_tpformat(self.tp)
        # kallsyms takes a while to parse: do it beside the compile unless filters need it now.
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._ksyms: Future[Kallsyms] = self._pool.submit(LiveKallsyms)  # names follow module loads
        self.spec = filter_spec(cfg, self.reasons, self.kallsyms)
        self.stats_only = cfg.stats and not cfg.events
        self.spec_is_early = flt.c_dev(self.spec) == flt.c_packet(self.spec) == flt.NO_FILTER
        # Causes are computed per cause key; NETFILTER_DROP's needs the stack (the hook).
        self.causes = CauseFinder() if cfg.causes and not self.stats_only else None
        cause_stacks = self._stack_reason() if self.causes is not None else -1
        self.text = build(
            self.tp, offsets.for_running_kernel(), self.spec,
            ProgramOptions(stack=cfg.stack or cause_stacks >= 0,
                           stack_reason=-1 if cfg.stack else cause_stacks,
                           stats_only=self.stats_only,
                           ringbuf_pages=pages),
        )
        self.lines = None if self.stats_only else self._lines(cfg.vmlinux)

    def _stack_reason(self) -> int:
        """The one reason whose stack the causes read (NETFILTER_DROP's: the hook), or -1
        when this kernel has no such reason (then the causes need no stack at all)."""
        try:
            return self.reasons.code("NETFILTER_DROP")
        except KdbgError:
            return -1

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

    def run(self, sink: Sink) -> WatchResult:
        """Attach, report until a stop condition, detach. Ctrl-C/SIGTERM end it cleanly."""
        cfg = self.cfg
        probe = DropProbe(self.text)
        decoder: Decoder | None = None
        delivered = 0
        done = False

        def on_event(raw: RawDropEvent) -> None:
            nonlocal decoder, delivered, done
            if done:
                return
            if decoder is None:
                decoder = Decoder(self.reasons, self.kallsyms(),
                                  stack_of=probe.stack if cfg.stack else None)
            event = decoder.decode(raw)
            if self.causes is not None:
                event = with_cause(self.causes, event, raw.stack_id, probe, decoder)
            sink.drop(self.lines.annotate(event) if self.lines else event)
            delivered += 1
            if cfg.count is not None and delivered >= cfg.count:
                done = True

        stop = StopSignals.install()

        workload = Workload(cfg.cmd)
        interrupted = False
        try:
            probe.start(on_event)
            lines = f", file:line from {self.lines.vmlinux}" if self.lines else ""
            sink.watching(
                f"kdbg: watching {TRACEPOINT} on Linux {os.uname().release} "
                f"(filters: {self.spec.describe()}{lines}); Ctrl-C to stop"
            )
            start = time.monotonic()
            next_stats = start + cfg.interval if cfg.interval else None
            workload.start()
            while not done and not stop:
                probe.poll(100)
                now = time.monotonic()
                if self.stats_only and cfg.count is not None:
                    done = self._matched(probe) >= cfg.count
                if next_stats is not None and now >= next_stats and cfg.stats:
                    rows, summary = self._snapshot(probe, delivered)
                    sink.stats(rows, summary, False)
                    next_stats += cfg.interval or 0
                if cfg.duration is not None and now - start >= cfg.duration:
                    break
                if workload.exited():
                    # Let drops the workload caused in its last moments arrive.
                    for _ in range(3):
                        probe.poll(50)
                    break
        finally:
            interrupted = bool(stop)
            stop.restore()
            status = workload.finish()
            try:
                if probe.loaded:
                    if not done:
                        probe.consume()
                    rows, summary = self._snapshot(probe, delivered)
                else:
                    rows, summary = [], Summary(0, 0, 0, 0)
            finally:
                probe.close()
                self._pool.shutdown(wait=False)
                if self.lines is not None:
                    self.lines.close()
        if self.lines is not None and self.lines.error:
            sink.watching(f"kdbg: warning: file:line stopped: {self.lines.error}")
        if cfg.stats:
            sink.stats(rows, summary, True)
        sink.summary(summary)
        return WatchResult(summary, tuple(rows), status, interrupted)

    def _matched(self, probe: DropProbe) -> int:
        """Drops that passed every filter: the stats table's total (no symbolizing)."""
        return sum(probe.stats().values()) + probe.counters()["stats_full"]

    def _snapshot(self, probe: DropProbe, delivered: int) -> tuple[list[StatsRow], Summary]:
        ctr = probe.counters()
        counts = probe.stats()
        rows = stats_rows(counts, self.reasons.name, self.kallsyms().lookup)
        # Under --stats with only reason/location filters the probe counts nothing but
        # the stats table (the cheapest path), so how many it looked at is unknown.
        fast = self.stats_only and self.spec_is_early
        summary = Summary(matched=sum(counts.values()) + ctr["stats_full"], delivered=delivered,
                          lost=ctr["lost"], seen=None if fast else ctr["seen"],
                          stats_full=ctr["stats_full"], streaming=not self.stats_only)
        return rows, summary


def prepare(cfg: WatchConfig) -> Watch:
    """Read the kernel's facts and build the program for ``cfg`` (no privileges needed
    beyond reading tracefs, BTF and kallsyms)."""
    return Watch(cfg)



def remote_options(cfg: WatchConfig) -> list[str]:
    """``kdbg watch`` options that make a remote tracer apply ``cfg``'s filters.

    Names (reasons, symbols, namespaces) are resolved by the remote kdbg against
    its own kernel, which is the point: numbers differ between kernels.
    """
    out: list[str] = []
    for flag, values in (("--reason", cfg.reasons), ("--location", cfg.locations),
                         ("--saddr", cfg.saddrs), ("--daddr", cfg.daddrs),
                         ("--addr", cfg.addrs), ("--sport", cfg.sports),
                         ("--dport", cfg.dports), ("--port", cfg.ports)):
        for v in values:
            out += [flag, str(v)]
    for flag, value in (("--proto", cfg.proto), ("--netns", cfg.netns),
                        ("--ifname", cfg.ifname)):
        if value is not None:
            out += [flag, value]
    if cfg.stack:
        out.append("--stack")
    if not cfg.causes:
        out.append("--no-causes")
    return out
