"""kdbg watch --write / --pcap and kdbg report on the running kernel: every drop
kept at a loop's full rate, the count matching the kernel's, the report the same
with nothing of the machine available, pcapng that Wireshark's tshark reads.

Every test builds its own pair of network namespaces and removes it; traffic
goes only between them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdbg.demo.throwaway import FLOOD_UDP_CODE as FLOOD_CODE
from kdbg.demo.throwaway import PY, VethLab
from kdbg.record import layout, offline
from tests.conftest import need

KDBG = [sys.executable, "-m", "kdbg"]
N = 23



@pytest.fixture
def lab() -> Iterator[VethLab]:
    with VethLab(prefix="kdbgrec", subnet=19) as lab:
        yield lab


def flood_cmd(lab: VethLab, count: int, dport: int = 5555, *, v6: bool = False) -> str:
    src, dst = (lab.addr6_a, lab.addr6_b) if v6 else (lab.addr_a, lab.addr_b)
    code = FLOOD_CODE.format(src=src, dst=dst, sport=40000, dport=dport, count=count)
    return shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", code])


def kdbg(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
         user: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [*KDBG, *args]
    if user:  # nobody: /proc/kallsyms shows zeros, nothing of root's is readable
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd="/")


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def rule_count(lab: VethLab, tool: str = "iptables") -> int:
    out = lab.b.run([tool, "-nvxL", "INPUT"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "dpt:5555" in line)


def test_write_keeps_every_drop_of_a_flood(lab: VethLab, tmp_path: Path) -> None:
    """100,000 datagrams as fast as a loop sends them: all recorded, none lost, the
    kernel's count and the DROP rule's counter the same."""
    count = 100_000
    lab.drop_udp(5555)
    out = tmp_path / "flood.kdbg"
    t0 = time.monotonic()
    # --netns: other floods may run on this machine at the same time.
    proc = kdbg("watch", "--write", str(out), "--reason", "NETFILTER_DROP", "--dport", "5555",
                "--netns", lab.b.name, "--cmd", flood_cmd(lab, count))
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert rule_count(lab) == count
    assert (f"kdbg: {count} drops recorded to {out}" in proc.stderr and
            f"the kernel counted {count} matching, 0 lost" in proc.stderr), proc.stderr

    rep = kdbg("report", str(out), "--stats", "--json")
    assert rep.returncode == 0, rep.stderr
    recs = records(rep.stdout)
    summary = [r for r in recs if r["type"] == "summary"][0]
    assert summary["records"] == summary["shown"] == count
    assert summary["matched"] == count and summary["lost"] == 0 and summary["complete"]
    stats = [r for r in recs if r["type"] == "stats"][0]
    assert [(c["reason"], c["count"]) for c in stats["counts"]] == [("NETFILTER_DROP", count)]
    assert stats["counts"][0]["location"].startswith("nft_do_chain+0x")
    flows = kdbg("report", str(out), "--group-by", "flow")
    assert flows.stdout.splitlines()[1].split() == [
        str(count), "udp", f"{lab.addr_a}:40000", ">", f"{lab.addr_b}:5555"]
    print(f"\n{count} drops in {elapsed:.1f} s, file {out.stat().st_size} bytes")


def test_report_lines_are_watchs_and_the_same_anywhere(lab: VethLab, tmp_path: Path) -> None:
    """The report's JSON lines carry what watch's do; read as nobody with an empty
    environment (no kallsyms, no netns names, no $PATH) it is byte for byte the same."""
    lab.drop_udp(5555)
    out = tmp_path / "small.kdbg"
    proc = kdbg("watch", "--write", str(out), "--dport", "5555", "--netns", lab.b.name,
                "--cmd", flood_cmd(lab, N))
    assert proc.returncode == 0, proc.stderr
    out.chmod(0o644)
    tmp_path.chmod(0o755)
    here = kdbg("report", str(out), "--json")
    assert here.returncode == 0, here.stderr
    drops = [r for r in records(here.stdout) if r["type"] == "drop"]
    assert len(drops) == N
    for d in drops:
        assert d["reason"] == "NETFILTER_DROP" and d["symbol"] == "nft_do_chain"
        assert (d["saddr"], d["daddr"], d["sport"], d["dport"]) == (
            lab.addr_a, lab.addr_b, 40000, 5555)
        assert d["netns"] == lab.b.inode and d["ifname"] == "veth-b" and d["len"] > 0
    for args in (["--json"], [], ["--group-by", "netns"], ["--netns", lab.b.name]):
        mine = kdbg("report", str(out), *args)
        elsewhere = kdbg("report", str(out), *args, env={}, user=True)
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert elsewhere.stdout == mine.stdout and elsewhere.stdout
    named = kdbg("report", str(out), "--group-by", "netns", env={}, user=True).stdout
    assert f"{lab.b.inode} ({lab.b.name})" in named
    # Filters as watch's: one that keeps none, and names the recording's kernel knows.
    none = kdbg("report", str(out), "--json", "--sport", "1", env={}, user=True)
    assert [r for r in records(none.stdout) if r["type"] == "drop"] == []
    bad = kdbg("report", str(out), "--reason", "NETFILTER_DORP", env={}, user=True)
    assert bad.returncode == 2 and "NETFILTER_DROP" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def tshark(path: Path) -> list[list[str]]:
    need(shutil.which("tshark") is not None, "tshark: run scripts/setup.sh")
    proc = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "occurrence=f",
         "-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst",
         "-e", "udp.srcport", "-e", "udp.dstport", "-e", "frame.comment",
         "-e", "frame.len", "-e", "frame.interface_name"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line.split("|") for line in proc.stdout.splitlines()]


def test_pcap_from_watch_and_report_ipv4_and_ipv6(lab: VethLab, tmp_path: Path) -> None:
    lab.drop_udp(5555)
    lab.drop_udp(5555, v6=True)
    pcap = tmp_path / "drops.pcapng"
    rec = tmp_path / "drops.kdbg"
    both = f"{flood_cmd(lab, N)} && {flood_cmd(lab, N, v6=True)}"
    proc = kdbg("watch", "--pcap", str(pcap), "--write", str(rec), "--dport", "5555",
                "--netns", lab.b.name, "--cmd", both)
    assert proc.returncode == 0, proc.stderr
    assert f"{2 * N} packets written to {pcap}" in proc.stderr
    rows = tshark(pcap)
    assert len(rows) == 2 * N
    v4 = [r for r in rows if r[0]]
    v6 = [r for r in rows if r[2]]
    assert len(v4) == len(v6) == N
    for r in v4:
        assert r[:2] == [lab.addr_a, lab.addr_b] and r[4:6] == ["40000", "5555"]
    for r in v6:
        assert r[2:4] == [lab.addr6_a, lab.addr6_b] and r[4:6] == ["40000", "5555"]
    for r in rows:
        assert r[6].startswith("NETFILTER_DROP at nft_do_chain+0x"), r[6]
        assert f"netns {lab.b.inode} ({lab.b.name})" in r[6] and "interface veth-b" in r[6]
        assert r[8] == "veth-b"
        assert int(r[7]) == 14 + (20 if r[0] else 40) + 8 + 15  # Ethernet, IP, UDP, payload
    # The report writes the same packets, filtered as asked.
    only6 = tmp_path / "v6.pcapng"
    rep = kdbg("report", str(rec), "--pcap", str(only6), "--daddr", lab.addr6_b)
    assert rep.returncode == 0, rep.stderr
    rows6 = tshark(only6)
    assert len(rows6) == N and all(r[3] == lab.addr6_b for r in rows6)


def test_killed_mid_write_reads_to_the_last_whole_block(lab: VethLab, tmp_path: Path) -> None:
    lab.drop_udp(5555)
    out = tmp_path / "cut.kdbg"
    proc = subprocess.Popen([*KDBG, "watch", "--write", str(out), "--dport", "5555",
                             "--netns", lab.b.name, "--cmd", flood_cmd(lab, 10_000_000)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or
                                               out.stat().st_size < 2_000_000):
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kdbg and the flood it started
        proc.communicate(timeout=60)
    assert out.stat().st_size >= 2_000_000
    # Cut inside a block as well, the way a write interrupted half-way leaves it.
    with open(out, "r+b") as f:
        f.truncate(out.stat().st_size - 100)
    rep = kdbg("report", str(out), "--json")
    assert rep.returncode == 0, rep.stderr
    summary = [r for r in records(rep.stdout) if r["type"] == "summary"][0]
    assert summary["records"] > 1000 and not summary["complete"]
    assert summary["truncated_bytes"] > 0 and summary["matched"] is None
    assert "was cut short" in rep.stderr and "Traceback" not in rep.stderr


def test_full_disk_is_one_line_exit_1(lab: VethLab, tmp_path: Path) -> None:
    lab.drop_udp(5555)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "kdbgtest", str(small)],
                   check=True)
    try:
        proc = kdbg("watch", "--write", str(small / "x.kdbg"), "--dport", "5555",
                    "--netns", lab.b.name, "--cmd", flood_cmd(lab, 50_000))
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f"kdbg: error: cannot write {small / 'x.kdbg'}: disk full"
    assert "Traceback" not in proc.stderr and lines[0].startswith("kdbg: watching")
    for path in ("/dev/full",):
        proc = kdbg("watch", "--write", path, "--count", "1")
        assert proc.returncode == 1 and proc.stderr.strip() == (
            f"kdbg: error: cannot write {path}: disk full")


def test_snaplen_and_print_bpf() -> None:
    proc = kdbg("watch", "--write", "/nonexistent/x", "--snaplen", "64", "--print-bpf")
    assert proc.returncode == 0, proc.stderr
    assert "events.ringbuf_reserve(sizeof(*r) + SNAP_BYTES)" in proc.stdout
    assert "#define SNAPLEN          64" in proc.stdout and "{{" not in proc.stdout
    proc = kdbg("watch", "--snaplen", "64")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "kdbg: error: --snaplen does nothing without --write or --pcap"


def test_count_keeps_at_most_n_and_json_summary(lab: VethLab, tmp_path: Path) -> None:
    lab.drop_udp(5555)
    out = tmp_path / "five.kdbg"
    proc = kdbg("watch", "--write", str(out), "--json", "--count", "5", "--snaplen", "0",
                "--dport", "5555", "--netns", lab.b.name, "--cmd", f"{flood_cmd(lab, N)}; sleep 5")
    assert proc.returncode == 0, proc.stderr
    summary = records(proc.stdout)[-1]
    assert summary["type"] == "summary" and summary["recorded"] == 5 and summary["lost"] == 0
    assert summary["matched"] >= 5 and summary["file"] == str(out)
    rep = kdbg("report", str(out), "--json")
    drops = [r for r in records(rep.stdout) if r["type"] == "drop"]
    assert len(drops) == 5 and all(d["dport"] == 5555 for d in drops)
    # snaplen 0: no packet bytes, each record its header alone (8 + 248 bytes, layout 4)
    meta = offline.load(out).rec.meta
    assert meta["snaplen"] == 0 and meta["record_size"] == layout.record_size(0) == 256


def test_ctrl_c_ends_the_file_with_the_kernels_count(lab: VethLab, tmp_path: Path) -> None:
    lab.drop_udp(5555)
    out = tmp_path / "int.kdbg"
    proc = subprocess.Popen(
        [*KDBG, "watch", "--write", str(out), "--dport", "5555", "--netns", lab.b.name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("kdbg: watching"), line
        subprocess.run(shlex.split(flood_cmd(lab, N)), check=True, timeout=60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"kdbg: {N} drops recorded to {out}" in err
    rep = kdbg("report", str(out), "--json")
    summary = records(rep.stdout)[-1]
    assert summary["records"] == summary["matched"] == N and summary["complete"]
