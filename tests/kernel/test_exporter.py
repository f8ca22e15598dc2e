"""kdbg exporter on the running kernel: known drops, exact counts on /metrics, read by
promtool and by a real Prometheus server.

Everything listens on 127.0.0.1 only; traffic goes only between the test's own
namespaces, which are removed at the end.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kdbg.demo.throwaway import VethLab
from tests.conftest import clone_reachable_by_others, need

KDBG = [sys.executable, "-m", "kdbg"]
N = 13  # a prime number of drops
PORT = 5555


class ExporterProc:
    """``kdbg exporter`` on 127.0.0.1 and a free port, stopped by PID."""

    def __init__(self, *args: str, prefix: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*(prefix or []), *KDBG, "exporter", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # SIGINT at its default, SIGTERM too: the test sends one of them
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_ready(timeout=120)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("kdbg: exporting"):
                return next(w for w in line.split() if w.startswith("http://"))
        self.stop()
        raise AssertionError(f"exporter never got ready: {''.join(self.stderr)}")

    @property
    def port(self) -> int:
        return int(urllib.parse.urlparse(self.url).port or 0)

    def scrape(self, accept: str | None = None) -> str:
        req = urllib.request.Request(self.url, headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(resp.read().decode())

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Send ``sig``; return the seconds until the process had exited."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return time.monotonic() - t0


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of metric ``name`` in the text format, by their sorted label pairs."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def drops_for(text: str, **labels: str) -> float:
    """kdbg_drops_total summed over the series that carry ``labels``."""
    want = set(labels.items())
    return sum(v for k, v in samples(text, "kdbg_drops_total").items() if want <= set(k))


def wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def lab() -> Iterator[VethLab]:
    with VethLab(prefix="kdbgexp", subnet=15) as lab:
        lab.drop_udp(PORT)
        yield lab


@pytest.fixture
def exporter() -> Iterator[ExporterProc]:
    proc = ExporterProc("--labels", "reason,location,netns,ifname")
    try:
        yield proc
    finally:
        proc.stop()


def test_scrape_grows_by_exactly_the_drops_and_promtool_accepts(
        lab: VethLab, exporter: ExporterProc, tmp_path: Path) -> None:
    need(shutil.which("promtool") is not None, "promtool: Debian's prometheus package "
         "(scripts/setup.sh installs it)")
    netns = str(lab.b.inode)
    before = drops_for(exporter.scrape(), reason="NETFILTER_DROP", netns=netns)
    lab.send_udp(N, PORT)
    wait_for(lambda: drops_for(exporter.scrape(), reason="NETFILTER_DROP", netns=netns)
             >= before + N, 10, f"{N} drops on /metrics")
    time.sleep(0.5)  # nothing more arrives: exactly N
    text = exporter.scrape()
    assert drops_for(text, reason="NETFILTER_DROP", netns=netns) == before + N
    series = [dict(k) for k in samples(text, "kdbg_drops_total")
              if dict(k)["netns"] == netns and dict(k)["reason"] == "NETFILTER_DROP"]
    assert series == [{"reason": "NETFILTER_DROP", "location": "nft_do_chain",
                       "netns": netns, "ifname": "veth-b"}]
    info = samples(text, "kdbg_build_info")
    assert [dict(k)["kernel_release"] for k in info] == [os.uname().release]
    assert samples(text, "kdbg_events_lost_total") == {(): 0.0}
    assert "# TYPE kdbg_hw_drops_total counter" in text

    # Counters survive scrapes: a second batch adds to the first.
    lab.send_udp(N, PORT)
    wait_for(lambda: drops_for(exporter.scrape(), reason="NETFILTER_DROP", netns=netns)
             >= before + 2 * N, 10, f"{2 * N} drops on /metrics")
    assert drops_for(exporter.scrape(), reason="NETFILTER_DROP", netns=netns) == before + 2 * N

    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    # Prometheus asks for OpenMetrics and gets it.
    om = exporter.scrape("application/openmetrics-text; version=1.0.0")
    assert om.rstrip().endswith("# EOF") and "# TYPE kdbg_build info" in om


def test_filters_apply_and_labels_are_chosen(lab: VethLab) -> None:
    exp = ExporterProc("--labels", "reason", "--reason", "NETFILTER_DROP", "--dport", "5556")
    try:
        lab.send_udp(N, PORT)  # port 5555: excluded by --dport 5556
        lab.send_udp(N, 7777)  # NO_SOCKET: excluded by --reason
        time.sleep(1)
        text = exp.scrape()
        assert samples(text, "kdbg_drops_total") == {}
        assert "# TYPE kdbg_drops_total counter" in text
    finally:
        exp.stop()
    exp = ExporterProc("--labels", "reason", "--netns", lab.b.name)
    try:
        lab.send_udp(N, PORT)
        wait_for(lambda: drops_for(exp.scrape(), reason="NETFILTER_DROP") >= N, 10, "drops")
        time.sleep(0.5)
        got = samples(exp.scrape(), "kdbg_drops_total")
        # only the chosen label; the namespace's own chatter (an IPv6 router
        # solicitation dropped as NOT_SPECIFIED, say) may add another reason
        assert got[(("reason", "NETFILTER_DROP"),)] == N, got
        assert all(len(key) == 1 and key[0][0] == "reason" for key in got), got
    finally:
        exp.stop()


def test_sigterm_ends_it_within_two_seconds(exporter: ExporterProc) -> None:
    exporter.scrape()
    elapsed = exporter.stop(signal.SIGTERM)
    assert exporter.proc.returncode == 0, "".join(exporter.stderr)
    assert elapsed < 2.0, f"SIGTERM took {elapsed:.2f} s"
    assert "exporter stopped after" in "".join(exporter.stderr)
    with socket.socket() as s:  # nothing listens there any more (TIME_WAIT may remain)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", exporter.port))
        s.listen()


def test_busy_port_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([*KDBG, "exporter", "--listen", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"kdbg: error: cannot listen on 127.0.0.1:{port}: "
                                   "Address already in use")


# -- a real Prometheus server --------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusProc:
    """Debian's Prometheus, its config and data in ``tmp``, on 127.0.0.1 only."""

    def __init__(self, tmp: Path, target_port: int) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: kdbg\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n")
        self.log = (tmp / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read().decode()
        return json.loads(body) if body.startswith("{") else {"text": body}

    def ready(self) -> bool:
        try:
            self.get("/-/ready")
            return True
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, object]]:
        reply = self.get("/api/v1/query", query=promql)
        assert reply["status"] == "success", reply
        return reply["data"]["result"]  # type: ignore[index, no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def test_prometheus_scrapes_the_same_count(lab: VethLab, exporter: ExporterProc,
                                           tmp_path: Path) -> None:
    need(shutil.which("prometheus") is not None,
         "Prometheus: Debian's prometheus package (scripts/setup.sh installs it)")
    prom = PrometheusProc(tmp_path, exporter.port)
    try:
        wait_for(prom.ready, 60, "Prometheus to be ready")
        netns = str(lab.b.inode)
        lab.send_udp(N, PORT)
        wait_for(lambda: drops_for(exporter.scrape(), reason="NETFILTER_DROP", netns=netns)
                 >= N, 10, "the drops on /metrics")
        expected = drops_for(exporter.scrape(), reason="NETFILTER_DROP", netns=netns)
        assert expected == N  # a new namespace: its count starts at 0
        promql = f'sum(kdbg_drops_total{{reason="NETFILTER_DROP",netns="{netns}"}})'

        def same() -> bool:
            result = prom.query(promql)
            return bool(result) and float(result[0]["value"][1]) == expected  # type: ignore[index]
        wait_for(same, 30, f"Prometheus to report {N}")
        up = prom.query('up{job="kdbg"}')
        assert [float(r["value"][1]) for r in up] == [1.0]  # type: ignore[index]
        info = prom.query("kdbg_build_info")
        assert info[0]["metric"]["kernel_release"] == os.uname().release  # type: ignore[index]
    finally:
        prom.stop()


# -- the systemd unit in docs/exporter.md ---------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "exporter.md"


def unit_text() -> str:
    return DOC.read_text().split("```ini\n", 1)[1].split("```", 1)[0]


def unit_caps() -> list[str]:
    line = next(ln for ln in unit_text().splitlines() if ln.startswith("AmbientCapabilities="))
    return [c.removeprefix("CAP_").lower() for c in line.split("=", 1)[1].split()]


def as_nobody(caps: list[str], cache: Path) -> list[str]:
    """argv prefix: user nobody with exactly ``caps`` (ambient, inheritable, bounding)."""
    spec = ",".join(["-all", *(f"+{c}" for c in caps)])
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            f"--inh-caps={spec}", f"--ambient-caps={spec}", f"--bounding-set={spec}",
            "env", f"XDG_CACHE_HOME={cache}", f"HOME={cache}"]


@pytest.fixture
def nobody_cache() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kdbg-exporter-caps-", dir="/tmp"))
    os.chown(path, 65534, 65534)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_systemd_unit_verifies() -> None:
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian's systemd)")
    need(Path("/usr/local/bin/kdbg").exists(), "kdbg on the PATH: run scripts/setup.sh")
    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp, "kdbg-exporter.service")
        unit.write_text(unit_text())
        proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                              text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runs_with_the_units_capabilities_and_no_fewer(lab: VethLab, nobody_cache: Path
                                                       ) -> None:
    caps = unit_caps()
    assert caps == ["bpf", "perfmon", "dac_read_search", "syslog"]
    exp = ExporterProc("--labels", "reason,location,netns", prefix=as_nobody(caps, nobody_cache))
    try:
        netns = str(lab.b.inode)
        lab.send_udp(N, PORT)
        wait_for(lambda: drops_for(exp.scrape(), netns=netns, reason="NETFILTER_DROP") >= N, 10,
                 "drops as nobody")
        time.sleep(0.5)
        # the namespace's own IPv6 chatter (ip6_mc_input, NOT_SPECIFIED) may add a series
        got = {k: v for k, v in samples(exp.scrape(), "kdbg_drops_total").items()
               if dict(k)["netns"] == netns and dict(k)["reason"] == "NETFILTER_DROP"}
        assert got == {(("location", "nft_do_chain"), ("netns", netns),
                        ("reason", "NETFILTER_DROP")): N}
    finally:
        assert exp.stop() < 2.0
    for missing in caps:
        fewer = [c for c in caps if c != missing]
        with clone_reachable_by_others():  # without dac_read_search too
            proc = subprocess.run([*as_nobody(fewer, nobody_cache), *KDBG, "exporter",
                                   "--listen", "127.0.0.1:0", "--duration", "30"],
                                  capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, (missing, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (missing, proc.stderr)
        assert proc.stderr.startswith("kdbg: error: "), (missing, proc.stderr)
