"""``kdbg exporter``: the drop counts kept in the kernel, served to Prometheus.

The numbers are the same per-CPU counts as ``kdbg watch --stats`` (the drop
program with its ring buffer unused), read from the BPF map when Prometheus
scrapes ``/metrics``; no event is streamed to user space. The kernel side never
waits for a scrape: a read is a series of map-lookup syscalls, and the program
keeps counting per CPU while they run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from kdbg import hwdrops
from kdbg.errors import BadInput
from kdbg.exporter.collector import DropCollector
from kdbg.exporter.config import ExporterConfig, ExporterError, Listen
from kdbg.signals import StopSignals
from kdbg.symbols import tpformat
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import offsets, program
from kdbg.trace.probe import TRACEPOINT, DropProbe, check_privileges
from kdbg.trace.program import ProgramOptions


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
        self.text = program.build(
            program.kernel_args(), offsets.for_running_kernel(), self.spec,
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

