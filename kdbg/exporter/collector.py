"""The exporter's Prometheus collector: the kernel's per-CPU counts, summed into label
sets when Prometheus scrapes.

Counters never go down while the exporter runs: each kernel key (reason code,
location address, netns, ifname) is given its label set once, so every series is
a sum of monotonic per-CPU counts over a fixed set of keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, InfoMetricFamily, Metric

from kdbg import __version__
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace.probe import DropProbe

UNKNOWN = "unknown"
# How often an address no symbol covers may make a scrape re-read /proc/kallsyms
# (a module may have loaded since the last read).
KALLSYMS_REFRESH_S = 5.0

# One kernel stats key: reason code, location address, netns inode, ifname.
StatsKey = tuple[int, int, int, str]



def aggregate(counts: Mapping[StatsKey, int],
              label_of: Callable[[StatsKey], tuple[str, ...] | None]) -> dict[tuple[str, ...], int]:
    """Sum kernel counts into label sets; a key whose labels are not known yet
    (``label_of`` gives None) is left out until they are, never shown under others."""
    out: dict[tuple[str, ...], int] = {}
    for key, n in counts.items():
        labels = label_of(key)
        if labels is not None:
            out[labels] = out.get(labels, 0) + n
    return out


class FunctionNames:
    """Location address -> the function's name, fixed at first sight.

    An address kallsyms cannot name (a module loaded after the last read) makes a
    re-read, at most every :data:`KALLSYMS_REFRESH_S`; until that read it has no
    name (None), and one still unnamed after it is ``unknown`` for good.
    """

    def __init__(self, load: Callable[[], Kallsyms], clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._load = load
        self._clock = clock
        self._ksyms: Kallsyms | None = None
        self._read_at = -1e9
        self._names: dict[int, str] = {}

    def _reload(self) -> None:
        self._ksyms = self._load()
        self._read_at = self._clock()

    def name(self, address: int) -> str | None:
        known = self._names.get(address)
        if known is not None:
            return known
        if self._ksyms is None:
            self._reload()
        assert self._ksyms is not None
        symbol = self._ksyms.lookup(address).symbol
        if symbol is None:
            if self._clock() - self._read_at < KALLSYMS_REFRESH_S:
                return None
            self._reload()
            symbol = self._ksyms.lookup(address).symbol
        self._names[address] = name = symbol or UNKNOWN
        return name


class CountSource(Protocol):
    """Where the hardware counts come from (kdbg.hwdrops)."""

    def hw_counts(self) -> dict[tuple[str, ...], int]: ...
    def hw_lost(self) -> int: ...


HW_LABELS = ("device", "trap", "group", "input_port")


class DropCollector:
    """A prometheus_client collector over the loaded drop program."""

    def __init__(self, probe: DropProbe, reasons: ReasonTable, kallsyms: Callable[[], Kallsyms],
                 labels: tuple[str, ...], kernel_release: str,
                 hw: CountSource | None = None) -> None:
        self.probe = probe
        self.reasons = reasons
        self.labels = labels
        self.kernel_release = kernel_release
        self.hw = hw
        self.functions = FunctionNames(kallsyms)
        self.lock = threading.Lock()
        self.scrapes = 0

    def label_of(self, key: StatsKey) -> tuple[str, ...] | None:
        reason, location, netns, ifname = key
        out = []
        for name in self.labels:
            if name == "reason":
                out.append(self.reasons.name(reason))
            elif name == "location":
                fn = self.functions.name(location)
                if fn is None:
                    return None
                out.append(fn)
            elif name == "netns":
                out.append(str(netns) if netns else "")
            else:
                out.append(ifname)
        return tuple(out)

    def _families(self) -> tuple[CounterMetricFamily, ...]:
        return (
            CounterMetricFamily(
                "kdbg_drops", "Packet drops on skb:kfree_skb that passed the filters, "
                "counted per CPU in the kernel.", labels=list(self.labels)),
            CounterMetricFamily(
                "kdbg_drops_uncounted", "Drops that passed the filters but found the "
                "in-kernel table full: counted, without labels."),
            CounterMetricFamily(
                "kdbg_events_lost", "Reports the kernel side could not record: a full ring "
                "buffer, or a full hardware-drop count table."),
            CounterMetricFamily(
                "kdbg_hw_drops", "Hardware drops reported by devlink traps "
                "(devlink:devlink_trap_report).", labels=list(HW_LABELS)),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()
        yield InfoMetricFamily("kdbg_build", "kdbg and the kernel it counts on.")

    def collect(self) -> Iterator[Metric]:
        drops, uncounted, lost, hw = self._families()
        with self.lock:
            if not self.probe.loaded:
                return
            counts = self.probe.stats_by_dev()
            ctr = self.probe.counters()
            hw_counts = self.hw.hw_counts() if self.hw else {}
            hw_lost = self.hw.hw_lost() if self.hw else 0
            by_labels = aggregate(counts, self.label_of)
            self.scrapes += 1
        for labels, n in sorted(by_labels.items()):
            drops.add_metric(list(labels), n)
        uncounted.add_metric([], ctr["stats_full"])
        lost.add_metric([], ctr["lost"] + hw_lost)
        for hw_labels, n in sorted(hw_counts.items()):
            hw.add_metric(list(hw_labels), n)
        yield from (drops, uncounted, lost, hw)
        yield InfoMetricFamily("kdbg_build", "kdbg and the kernel it counts on.", value={
            "version": __version__, "kernel_release": self.kernel_release})
