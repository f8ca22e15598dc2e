"""``kdbg watch --bpf``: packets dropped by the verdict of an XDP or tc program.

An XDP program's ``XDP_DROP`` or ``XDP_ABORTED`` frees the packet before it is an skb,
so ``skb:kfree_skb`` never sees it; a tc program's ``TC_ACT_SHOT`` shows there only as a
generic reason at ``tcf_classify``'s caller. kdbg finds every loaded XDP and tc
(``sched_cls``) program through
``bpf(2)`` (:mod:`kdbg.trace.bpfprogs`), loads one fexit program on each
(bpf/bpf_verdict.bpf.c), and reports each dropping verdict as a drop record with the
program (id, name, tag), the interface the packet came in on, its headers, and the
program's source lines that return that verdict (:class:`kdbg.trace.bpfverdict.BpfProg`).
Programs loaded later are picked up by a rescan every :data:`RESCAN_S` seconds.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field

from kdbg.drops.bpfdecode import VERDICT_NAMES, Verdicts, decode, verdict_name
from kdbg.drops.output import StatsRow, Summary, stats_rows
from kdbg.drops.watch import MORE_EVERY, Sink
from kdbg.errors import BadInput
from kdbg.signals import StopSignals
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import bpfprogs, bpfsys, bpfverdict, layout, objcache
from kdbg.trace.bpfprogs import ProgFacts
from kdbg.trace.filters import PacketFilters
from kdbg.trace.loop import quiesce
from kdbg.trace.more import MoreCounts
from kdbg.trace.pacing import PacedReader
from kdbg.trace.probe import RingProbe, check_privileges, per_cpu_u64

__all__ = ["VERDICT_NAMES", "BpfWatchConfig", "decode", "prepare", "wanted", "watch"]

RESCAN_S = 1.0
TYPES = frozenset({bpfsys.PROG_XDP, bpfsys.PROG_SCHED_CLS})


@dataclass(frozen=True)
class BpfWatchConfig:
    filters: PacketFilters = field(default_factory=PacketFilters)
    progs: tuple[str, ...] = ()  # --prog: names or ids
    count: int | None = None
    duration: float | None = None
    stats: bool = False  # count per (program, verdict) in the kernel instead of each drop
    interval: float | None = None  # with stats: print the counts every so many seconds


class VerdictProbe(RingProbe):
    """The fexit program's maps, and one fexit link per traced program."""

    RECORD = layout.RawDropEvent
    COUNTERS = {layout.CTR_LOST: "lost", layout.CTR_SEEN: "seen",
                layout.CTR_MATCHED: "matched"}
    LABEL = "BPF verdict program"

    def __init__(self, text: str) -> None:
        super().__init__(text, [bpfverdict.EXCEPTION])

    def load(self) -> None:
        self._obj = objcache.load(self.text, self.attachments, self.LABEL,
                                  later=tuple(bpfverdict.FUNCS.values()))

    def stats(self) -> dict[tuple[int, int], int]:
        """In-kernel counts of matching verdicts per (verdict, program's JITed entry)."""
        out: dict[tuple[int, int], int] = {}
        for key, value in self.items("stats"):
            k = layout.RawStatsKey.from_buffer_copy(key)
            out[k.reason, k.location] = out.get((k.reason, k.location), 0) + sum(
                per_cpu_u64(value))
        return out

    def trace(self, prog: ProgFacts) -> int:
        """Attach to ``prog``; the link's fd. Its entry goes in the map ``traced``: its
        XDP_ABORTED comes from fexit, not from xdp:xdp_exception."""
        link = self.obj.attach_fexit(bpfverdict.FUNCS[prog.kind], prog.fd, prog.func_btf_id,
                                     f"{self.LABEL} on program {prog.id} ({prog.name})")
        self.update("traced", struct.pack("<Q", prog.address), b"\1")
        return link

    def leave_out(self, prog: ProgFacts) -> None:
        """``prog`` is not wanted (``--prog``): xdp:xdp_exception leaves it out too."""
        if prog.address:
            self.update("traced", struct.pack("<Q", prog.address), b"\2")

    def counted(self, table: str) -> list[tuple[bytes, int]]:
        """A per-key table of the verdicts a full ring had no room for, summed over CPUs
        (none under --stats, whose program has no such table)."""
        if table not in self.obj.specs:
            return []
        return [(key, sum(per_cpu_u64(value))) for key, value in self.items(table)]


def wanted(prog: ProgFacts, names: tuple[str, ...]) -> bool:
    """Whether ``--prog`` (names or ids; none: every program) picks ``prog``."""
    return not names or prog.name in names or str(prog.id) in names


def prepare(cfg: BpfWatchConfig) -> str:
    """Check the options and the kernel; the program text :func:`watch` loads."""
    if cfg.count is not None and cfg.count <= 0:
        raise BadInput("--count must be positive")
    if cfg.duration is not None and cfg.duration <= 0:
        raise BadInput("--duration must be positive")
    if cfg.filters.reasons or cfg.filters.locations:
        raise BadInput("--reason and --location name kernel drops, not BPF verdicts "
                       "(use --prog)")
    if cfg.stats and cfg.count is not None:
        raise BadInput("--count counts the drops shown, and --stats shows none "
                       "(use --duration)")
    if cfg.interval is not None and (not cfg.stats or cfg.interval <= 0):
        raise BadInput("--interval needs --stats and a positive number of seconds")
    check_privileges()
    spec = cfg.filters.resolve(ReasonTable({}, "BPF verdicts"))
    return bpfverdict.build(bpfverdict.kernel_fields(), spec, stats=cfg.stats)


class BpfWatch:
    """The traced programs and the probe; :meth:`rescan` picks up new programs."""

    def __init__(self, cfg: BpfWatchConfig, probe: VerdictProbe) -> None:
        self.cfg = cfg
        self.probe = probe
        self.progs: dict[int, ProgFacts] = {}  # by id: traced, fd open
        self.by_address: dict[int, ProgFacts] = {}
        self.skipped: set[int] = set()  # ids not wanted, or without BTF
        self.without_btf: list[ProgFacts] = []  # wanted, but the last scan found no BTF
        self.untraced: dict[int, ProgFacts] = {}  # by JITed entry: seen, not traced

    def rescan(self) -> list[ProgFacts]:
        """Trace every wanted program loaded since the last scan; the new ones."""
        new = []
        self.without_btf = []
        for prog in bpfprogs.scan(TYPES, set(self.progs) | self.skipped):
            if not wanted(prog, self.cfg.progs) or not prog.func_btf_id:
                if wanted(prog, self.cfg.progs):
                    self.without_btf.append(prog)
                else:
                    self.probe.leave_out(prog)
                self.untraced[prog.address] = prog
                self.skipped.add(prog.id)
                os.close(prog.fd)
                continue
            try:
                self.probe.trace(prog)
            except BaseException:
                os.close(prog.fd)
                raise
            self.progs[prog.id] = prog
            self.by_address[prog.address] = prog
            new.append(prog)
        return new

    def program_at(self, entry: int) -> ProgFacts | None:
        """The program whose JITed entry is ``entry``, traced or not (None: loaded since
        the last scan)."""
        return self.by_address.get(entry) or self.untraced.get(entry)

    def rows(self) -> list[StatsRow]:
        """The in-kernel counts, a row per (verdict, program), largest first."""
        def locate(address: int) -> str:
            prog = self.by_address.get(address) or self.untraced.get(address)
            return f"{prog.ksym} (prog {prog.id})" if prog is not None else f"0x{address:x}"

        return stats_rows(self.probe.stats(), verdict_name, locate)

    def close(self) -> None:
        self.probe.close()
        for prog in self.progs.values():
            os.close(prog.fd)
        self.progs.clear()


def describe(progs: list[ProgFacts]) -> str:
    return ", ".join(f"{p.id} ({p.name})" for p in progs) or "none yet"


def watch(cfg: BpfWatchConfig, sink: Sink) -> int:
    """Report drops decided by XDP and tc programs until Ctrl-C/SIGTERM, ``count`` or
    ``duration``; return how many were reported."""
    state = BpfWatch(cfg, VerdictProbe(prepare(cfg)))
    verdicts = Verdicts(state.program_at, time.time_ns() - time.monotonic_ns())
    counts = MoreCounts(state.probe.counted)
    delivered = 0

    def on_event(raw: layout.RawDropEvent) -> None:
        nonlocal delivered
        if cfg.count is not None and delivered >= cfg.count:
            return
        prog = state.program_at(raw.location)
        # xdp:xdp_exception sees the XDP_ABORTED of programs loaded since the last scan
        if wanted(prog, cfg.progs) if prog is not None else not cfg.progs:
            sink.drop(verdicts.event(raw, prog))
            delivered += 1

    def report_more() -> None:
        for key, n in counts.new():
            sink.more(verdicts.more(key, n))

    reader = PacedReader(state.probe)
    stop = StopSignals.install()
    try:
        state.probe.start(on_event)
        first = state.rescan()
        _say_skipped(state, sink)
        sink.watching(f"kdbg: watching the verdicts of XDP and tc programs {describe(first)} "
                      f"(filters: {_labels(cfg)}); Ctrl-C to stop")
        start = last_scan = last_stats = last_more = time.monotonic()
        while not stop:
            reader.turn()
            sink.flush()
            now = time.monotonic()
            if cfg.interval is not None and now - last_stats >= cfg.interval:
                sink.stats(state.rows(), _summary(state, delivered, cfg), False)
                last_stats = now
            if now - last_more >= MORE_EVERY:
                report_more()
                last_more = now
            if cfg.count is not None and delivered >= cfg.count:
                break
            if cfg.duration is not None and now - start >= cfg.duration:
                break
            if now - last_scan >= RESCAN_S:
                for prog in state.rescan():
                    sink.watching(f"kdbg: now tracing program {prog.id} ({prog.name})")
                _say_skipped(state, sink)
                last_scan = now
        state.probe.detach()
        quiesce(state.probe)
        if cfg.count is None or delivered < cfg.count:
            while state.probe.consume():
                pass
        sink.flush()
        report_more()
        summary = _summary(state, delivered, cfg, counts.total)
        rows = state.rows() if cfg.stats else []
    finally:
        stop.restore()
        state.close()
    sink.flush()
    if cfg.stats:
        sink.stats(rows, summary, True)
    sink.summary(summary)
    return delivered


def _summary(state: BpfWatch, delivered: int, cfg: BpfWatchConfig,
             summarized: int = 0) -> Summary:
    ctr = state.probe.counters()
    return Summary(matched=ctr["matched"], delivered=delivered, lost=ctr["lost"],
                   seen=ctr["seen"], streaming=not cfg.stats, summarized=summarized)


def _say_skipped(state: BpfWatch, sink: Sink) -> None:
    for prog in state.without_btf:
        sink.watching(f"kdbg: not tracing {prog.kind} program {prog.id} ({prog.name}): it was "
                      "loaded without BTF, and an fexit program attaches only to a program "
                      "whose BTF describes its function")


def _labels(cfg: BpfWatchConfig) -> str:
    spec = cfg.filters.resolve(ReasonTable({}, "BPF verdicts"))
    return " ".join([*(f"prog={p}" for p in cfg.progs), *spec.labels]) or "none"
