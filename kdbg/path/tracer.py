"""``kdbg path``: attach the path program, report hops and ends until a stop condition.

Stop conditions and signals behave as in ``kdbg watch``: ``count`` paths ended,
``duration`` seconds, or the ``cmd`` workload exiting; Ctrl-C and SIGTERM set a
flag (an exception raised in bcc's ctypes callback would be swallowed).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from kdbg.errors import BadInput
from kdbg.signals import StopSignals
from kdbg.symbols.kallsyms import Kallsyms, LiveKallsyms
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import filters as flt
from kdbg.trace.probe import check_privileges
from kdbg.watch import WatchConfig, filter_spec
from kdbg.workload import Workload

from . import program
from .event import End, PathDecoder, PathRecord
from .layout import RawPathEvent
from .nsnames import NetnsNames
from .probe import PathProbe
from .report import PathSummary


@dataclass(frozen=True)
class PathConfig:
    """Everything ``kdbg path`` was asked for, before any kernel lookup."""

    proto: str | None = None
    saddrs: tuple[str, ...] = ()
    daddrs: tuple[str, ...] = ()
    addrs: tuple[str, ...] = ()
    sports: tuple[int, ...] = ()
    dports: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    icmp_ids: tuple[int, ...] = ()
    netns: str | None = None
    ifname: str | None = None
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
    if cfg.count is not None and cfg.count <= 0:
        raise BadInput("--count must be positive")
    if cfg.duration is not None and cfg.duration <= 0:
        raise BadInput("--duration must be positive")
    pages = cfg.buffer_pages
    if pages <= 0 or pages & (pages - 1):
        raise BadInput("--buffer-pages must be a power of two")
    for ident in cfg.icmp_ids:
        if not 0 <= ident <= 65535:
            raise BadInput(f"ICMP identifier out of range: {ident}")


def path_filter_spec(cfg: PathConfig, reasons: ReasonTable) -> flt.FilterSpec:
    """The drop tracer's filters (protocol, addresses, ports, netns, ifname) for ``cfg``."""
    wcfg = WatchConfig(proto=cfg.proto, saddrs=cfg.saddrs, daddrs=cfg.daddrs, addrs=cfg.addrs,
                       sports=cfg.sports, dports=cfg.dports, ports=cfg.ports,
                       netns=cfg.netns, ifname=cfg.ifname)

    def no_symbols() -> Kallsyms:  # no --location here, so never called
        raise AssertionError("path filters need no symbols")

    spec = filter_spec(wcfg, reasons, no_symbols)
    labels = spec.labels + tuple(f"icmp-id={i}" for i in cfg.icmp_ids)
    return flt.FilterSpec(proto=spec.proto, saddrs=spec.saddrs, daddrs=spec.daddrs,
                          addrs=spec.addrs, sports=spec.sports, dports=spec.dports,
                          ports=spec.ports, netns=spec.netns, ifname=spec.ifname, labels=labels)


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

    def run(self, sink: PathSink) -> PathResult:
        """Attach, report until a stop condition, detach."""
        cfg = self.cfg
        probe = PathProbe(self.text, self.formats.attachments())
        decoder: PathDecoder | None = None
        shown: set[int] = set()
        ended = 0
        done = False

        def on_event(raw: RawPathEvent) -> None:
            nonlocal decoder, ended, done
            if done:
                return
            if decoder is None:
                decoder = PathDecoder(self.reasons, self._ksyms.result().lookup, NetnsNames())
            rec = decoder.decode(raw)
            sink.record(rec)
            shown.add(rec.packet)
            if isinstance(rec, End):
                ended += 1
                if cfg.count is not None and ended >= cfg.count:
                    done = True

        stop = StopSignals.install()
        workload = Workload(cfg.cmd)
        status: int | None = None
        try:
            probe.start(on_event)
            hooks = ", ".join(tp for tp, _fn in self.formats.attachments())
            sink.watching(f"kdbg: watching {hooks} on Linux {os.uname().release} "
                          f"(filters: {self.spec.describe()}); Ctrl-C to stop")
            start = time.monotonic()
            workload.start()
            while not done and not stop:
                probe.poll(100)
                if cfg.duration is not None and time.monotonic() - start >= cfg.duration:
                    break
                if workload.exited():
                    # Let the workload's last packets arrive and end.
                    for _ in range(3):
                        probe.poll(50)
                    break
        finally:
            stop.restore()
            status = workload.finish()
            try:
                ctr = {"lost": 0, "track_full": 0, "packets": 0}
                if probe.loaded:
                    if not done:
                        probe.consume()
                    ctr = probe.counters()
            finally:
                probe.close()
                self._pool.shutdown(wait=False)
        summary = PathSummary(packets=ctr["packets"], ended=ended, shown=len(shown),
                              lost=ctr["lost"], track_full=ctr["track_full"])
        sink.summary(summary)
        return PathResult(summary, status, bool(stop))


def prepare(cfg: PathConfig) -> PathTrace:
    """Read the kernel's facts and build the program for ``cfg``."""
    return PathTrace(cfg)
