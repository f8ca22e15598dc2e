"""``kdbg exporter``: the drop counts kept in the kernel, served to Prometheus.

The numbers are the same per-CPU counts as ``kdbg watch --stats`` (the drop
program with its ring buffer unused), read from the BPF map when Prometheus
scrapes ``/metrics``; no event is streamed to user space. The kernel side never
waits for a scrape: a read is a series of map-lookup syscalls, and the program
keeps counting per CPU while they run.

Counters never go down while the exporter runs: each kernel key (reason code,
location address, netns, ifname) is given its label set once, so every series is
a sum of monotonic per-CPU counts over a fixed set of keys.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlparse

from prometheus_client.core import CounterMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from kdbg import __version__
from kdbg.drops import hwdrops
from kdbg.errors import BadInput, KdbgError
from kdbg.signals import StopSignals
from kdbg.symbols import tpformat
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import filters as flt
from kdbg.trace import offsets
from kdbg.trace.probe import TRACEPOINT, DropProbe, check_privileges
from kdbg.trace.program import ProgramOptions, build

LABELS = ("reason", "location", "netns", "ifname")
DEFAULT_LABELS = ("reason", "location")
DEFAULT_LISTEN = "127.0.0.1:9469"
UNKNOWN = "unknown"
# How often an address no symbol covers may make a scrape re-read /proc/kallsyms
# (a module may have loaded since the last read).
KALLSYMS_REFRESH_S = 5.0

# One kernel stats key: reason code, location address, netns inode, ifname.
StatsKey = tuple[int, int, int, str]


class ExporterError(KdbgError):
    """The exporter could not listen or serve."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/metrics"


def parse_listen(text: str) -> Listen:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6); port 0 picks a free one."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise BadInput(f"--listen wants ADDR:PORT, not {text!r}",
                       hint=f"e.g. {DEFAULT_LISTEN}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise BadInput(f"--listen wants an IP address, not {host!r}",
                       hint=f"e.g. {DEFAULT_LISTEN}") from None
    try:
        port = int(port_text)
    except ValueError:
        raise BadInput(f"not a port number: {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise BadInput(f"port out of range: {port}")
    return Listen(host, port)


def parse_labels(text: str) -> tuple[str, ...]:
    """A comma list of :data:`LABELS`, in the canonical order; ``""`` or ``none``: no label."""
    if text.strip().lower() in ("", "none"):
        return ()
    wanted = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = wanted - set(LABELS)
    if unknown:
        raise BadInput(f"unknown label {', '.join(sorted(unknown))!r}",
                       hint="choose from " + ",".join(LABELS))
    return tuple(name for name in LABELS if name in wanted)


@dataclass(frozen=True)
class ExporterConfig:
    """What ``kdbg exporter`` was asked for."""

    listen: Listen = field(default_factory=lambda: parse_listen(DEFAULT_LISTEN))
    labels: tuple[str, ...] = DEFAULT_LABELS
    filters: flt.PacketFilters = field(default_factory=flt.PacketFilters)
    duration: float | None = None

    @property
    def per_device(self) -> bool:
        """The kernel key must carry netns and ifname."""
        return "netns" in self.labels or "ifname" in self.labels


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
    """Where the hardware counts come from (kdbg.drops.hwdrops)."""

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


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = urlparse(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
            try:
                body = encoder(self.server.registry)
            except Exception as err:  # a scrape must never end the exporter
                self.send_error(500, f"collect failed: {err}")
                return
            self._reply(200, content_type, body)
        elif path == "/":
            self._reply(200, "text/plain; charset=utf-8",
                        b"kdbg exporter: drop counts at /metrics\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found; try /metrics\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class MetricsServer(ThreadingHTTPServer):
    """``/metrics`` over HTTP, one thread per request."""

    daemon_threads = True

    def __init__(self, listen: Listen, registry: CollectorRegistry) -> None:
        self.registry = registry
        if ":" in listen.host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((listen.host, listen.port), _Handler)
        except OSError as err:
            raise ExporterError(f"cannot listen on {listen.host}:{listen.port}: "
                                f"{err.strerror}") from None

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@dataclass(frozen=True)
class ExporterResult:
    scrapes: int
    interrupted: bool


class Exporter:
    """A prepared exporter: kernel facts read, filters resolved, program text built."""

    def __init__(self, cfg: ExporterConfig) -> None:
        if cfg.duration is not None and cfg.duration <= 0:
            raise BadInput("--duration must be positive")
        self.cfg = cfg
        check_privileges()
        self.tp = tpformat.load("skb", "kfree_skb")
        self.reasons = ReasonTable.from_tpformat(self.tp)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._ksyms: Future[Kallsyms] = self._pool.submit(Kallsyms.load)
        self.spec = cfg.filters.resolve(self.reasons, self.kallsyms)
        self.text = build(
            self.tp, offsets.for_running_kernel(), self.spec,
            ProgramOptions(stats_only=True, stats_by_dev=cfg.per_device, ringbuf_pages=1),
        )

    def kallsyms(self) -> Kallsyms:
        return self._ksyms.result()

    def run(self, ready: Callable[[str], None]) -> ExporterResult:
        """Attach, serve until SIGINT/SIGTERM (or ``duration``), detach."""
        probe = DropProbe(self.text)
        hw: hwdrops.HwProbe | None = None
        reads = iter([self.kallsyms])  # the first read is the one made beside the compile

        def kallsyms() -> Kallsyms:
            return next(reads, Kallsyms.load)()

        collector = DropCollector(probe, self.reasons, kallsyms, self.cfg.labels,
                                  os.uname().release, hw)
        registry = CollectorRegistry()
        registry.register(collector)
        stop = StopSignals.install()
        server: MetricsServer | None = None
        thread: threading.Thread | None = None
        try:
            probe.start(lambda _raw: None)
            if "location" in self.cfg.labels:
                self.kallsyms()  # unreadable addresses (no CAP_SYSLOG): one line, not HTTP 500s
            server = MetricsServer(self.cfg.listen, registry)
            # Errors above end it in one line; from here on it serves.
            try:
                hw = collector.hw = hwdrops.counting_probe()
            except hwdrops.NoDevlink as err:
                ready(f"kdbg: {err}; kdbg_hw_drops_total stays empty")
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                      name="kdbg-exporter-http", daemon=True)
            thread.start()
            labels = ",".join(self.cfg.labels) or "none"
            ready(f"kdbg: exporting {TRACEPOINT} drop counts on Linux {os.uname().release} "
                  f"at {self.cfg.listen.url(server.port)} (labels: {labels}; "
                  f"filters: {self.spec.describe()}); Ctrl-C to stop")
            start = time.monotonic()
            while not stop:
                time.sleep(0.1)
                if self.cfg.duration is not None and time.monotonic() - start >= self.cfg.duration:
                    break
        finally:
            interrupted = bool(stop)
            stop.restore()
            if server is not None:
                server.shutdown()
                server.server_close()
            with collector.lock:
                probe.close()
                if hw is not None:
                    hw.close()
            self._pool.shutdown(wait=False)
        return ExporterResult(collector.scrapes, interrupted)


def prepare(cfg: ExporterConfig) -> Exporter:
    """Read the kernel's facts and build the program for ``cfg``."""
    return Exporter(cfg)

