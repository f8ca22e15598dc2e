"""``kdbg path``: attach the path program, report hops and ends until a stop condition.

Stop conditions and signals behave as in ``kdbg watch``: ``count`` paths ended,
``duration`` seconds, or the ``cmd`` workload exiting; Ctrl-C and SIGTERM set a
flag (an exception raised in bcc's ctypes callback would be swallowed).
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from kdbg.errors import BadInput
from kdbg.symbols.kallsyms import Kallsyms, LiveKallsyms
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import filters as flt
from kdbg.trace import loop
from kdbg.trace.nsnames import NetnsNames
from kdbg.trace.probe import check_privileges

from . import program
from .event import End, PathDecoder, PathRecord
from .layout import RawPathEvent
from .probe import PathProbe
from .report import PathSummary


@dataclass(frozen=True)
class PathConfig:
    """Everything ``kdbg path`` was asked for, before any kernel lookup."""

    filters: flt.PacketFilters = flt.PacketFilters()  # no reasons or locations: they end paths
    icmp_ids: tuple[int, ...] = ()
    count: int | None = None
    duration: float | None = None
    cmd: str | None = None
    buffer_pages: int = 256


class PathSink(Protocol):
    """Where a path trace reports to."""

    def watching(self, message: str) -> None: ...
    def record(self, rec: PathRecord) -> None: ...
    def summary(self, summary: PathSummary) -> None: ...


@dataclass(frozen=True)
class PathResult:
    summary: PathSummary
    cmd_status: int | None
    interrupted: bool


def _check(cfg: PathConfig) -> None:
    loop.check_limits(cfg.count, cfg.duration)
    loop.check_pages(cfg.buffer_pages)
    for ident in cfg.icmp_ids:
        if not 0 <= ident <= 65535:
            raise BadInput(f"ICMP identifier out of range: {ident}")


def path_filter_spec(cfg: PathConfig, reasons: ReasonTable) -> flt.FilterSpec:
    """The drop tracer's filters (protocol, addresses, ports, netns, ifname) for ``cfg``."""
    spec = cfg.filters.resolve(reasons)
    return dataclasses.replace(spec, reasons=(), locations=(), labels=spec.labels + tuple(
        f"icmp-id={i}" for i in cfg.icmp_ids))


class PathTrace:
    """A prepared trace: kernel facts read, filters resolved, program text built."""

    def __init__(self, cfg: PathConfig) -> None:
        _check(cfg)
        self.cfg = cfg
        check_privileges()
        self.formats = program.load_formats()
        self.reasons = ReasonTable.from_tpformat(self.formats.kfree_skb)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._ksyms: Future[Kallsyms] = self._pool.submit(LiveKallsyms)  # names follow module loads
        self.spec = path_filter_spec(cfg, self.reasons)
        self.text = program.build(
            self.formats, program.kernel_offsets(), self.spec, cfg.icmp_ids,
            program.PathOptions(ringbuf_pages=cfg.buffer_pages))

    def kallsyms(self) -> Kallsyms:
        return self._ksyms.result()

    def close(self) -> None:
        """Stop the kallsyms reader."""
        self._pool.shutdown(wait=False)

    def run(self, sink: PathSink) -> PathResult:
        """Attach, report until a stop condition, detach."""
        turn = _PathLoop(self, sink)
        end = loop.run(turn, cmd=self.cfg.cmd, duration=self.cfg.duration)
        ctr = turn.counters
        summary = PathSummary(packets=ctr["packets"], ended=turn.paths_ended, shown=len(turn.shown),
                              lost=ctr["lost"], track_full=ctr["track_full"])
        sink.summary(summary)
        return PathResult(summary, end.cmd_status, end.interrupted)


class _PathLoop(loop.RingLoop):
    """One run of a prepared :class:`PathTrace`: decode and deliver each hop and end."""

    probe: PathProbe

    def __init__(self, trace: PathTrace, sink: PathSink) -> None:
        super().__init__(PathProbe(trace.text, trace.formats.attachments()))
        self.trace, self.sink = trace, sink
        self.decoder: PathDecoder | None = None
        self.shown: set[int] = set()
        self.paths_ended = 0
        self.counters = {"lost": 0, "track_full": 0, "packets": 0}

    def on_event(self, raw: RawPathEvent) -> None:
        if self.ended:
            return
        if self.decoder is None:
            self.decoder = PathDecoder(self.trace.reasons, self.trace.kallsyms().lookup,
                                       NetnsNames())
        rec = self.decoder.decode(raw)
        self.sink.record(rec)
        self.shown.add(rec.packet)
        if isinstance(rec, End):
            self.paths_ended += 1
            count = self.trace.cfg.count
            if count is not None and self.paths_ended >= count:
                self.ended = True

    def attach(self) -> None:
        super().attach()
        hooks = ", ".join(tp for tp, _fn in self.trace.formats.attachments())
        self.sink.watching(f"kdbg: watching {hooks} on Linux {os.uname().release} "
                           f"(filters: {self.trace.spec.describe()}); Ctrl-C to stop")

    def final(self) -> None:
        self.counters = self.probe.counters()

    def close(self) -> None:
        super().close()
        self.trace.close()


def prepare(cfg: PathConfig) -> PathTrace:
    """Read the kernel's facts and build the program for ``cfg``."""
    return PathTrace(cfg)
