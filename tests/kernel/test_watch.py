"""kdbg watch on the running kernel: known workloads, exact counts, right fields.

Every test builds its own pair of network namespaces and removes it; traffic
goes only between them.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdbg.demo.throwaway import FLOOD_UDP_CODE, PY, SYN_CODE, VethLab
from kdbg.demo.throwaway import SEND_UDP_CODE as SEND_CODE
from kdbg.symbols import tpformat
from kdbg.symbols.reasons import ReasonTable

KDBG = [sys.executable, "-m", "kdbg"]
N = 23  # a prime number of packets, as bcc's guide asks


@pytest.fixture
def lab() -> Iterator[VethLab]:
    with VethLab(prefix="kdbgtest", subnet=9) as lab:
        yield lab


def send_cmd(lab: VethLab, count: int, dport: int, *, v6: bool = False) -> str:
    src, dst = (lab.addr6_a, lab.addr6_b) if v6 else (lab.addr_a, lab.addr_b)
    code = SEND_CODE.format(src=src, dst=dst, sport=40000, dport=dport, count=count)
    return shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", code])


def syn_cmd(lab: VethLab, dport: int) -> str:
    code = SYN_CODE.format(dst=lab.addr_b, dport=dport)
    return shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", code])


def watch(*args: str, timeout: float = 120) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([*KDBG, "watch", "--json", *args], capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def drops(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "drop"]


def test_netfilter_drop_exact_count_and_fields(lab: VethLab) -> None:
    lab.drop_udp(5555)
    rc, recs, err = watch("--reason", "NETFILTER_DROP", "--proto", "udp", "--dport", "5555",
                          "--cmd", send_cmd(lab, N, 5555))
    assert rc == 0, err
    assert "kdbg: watching" in err
    got = drops(recs)
    assert len(got) == N
    for d in got:
        assert d["reason"] == "NETFILTER_DROP"
        assert d["symbol"] == "nft_do_chain"
        assert d["location"].startswith("nft_do_chain+0x")
        assert d["proto"] == "udp" and d["family"] == "ipv4"
        assert (d["saddr"], d["daddr"]) == (lab.addr_a, lab.addr_b)
        assert (d["sport"], d["dport"]) == (40000, 5555)
        assert d["netns"] == lab.b.inode
        assert d["ifname"] == "veth-b" and d["ifindex"] > 0
        assert d["len"] > 0
    summary = [r for r in recs if r["type"] == "summary"][0]
    assert summary["matched"] == N and summary["lost"] == 0


def test_stats_counts_in_kernel(lab: VethLab) -> None:
    lab.drop_udp(5555)
    rc, recs, err = watch("--stats", "--reason", "netfilter_drop", "--dport", "5555",
                          "--cmd", send_cmd(lab, N, 5555))
    assert rc == 0, err
    assert drops(recs) == []  # --stats alone streams no events
    final = [r for r in recs if r["type"] == "stats" and r["final"]]
    assert len(final) == 1
    counts = final[0]["counts"]
    assert len(counts) == 1
    assert counts[0]["reason"] == "NETFILTER_DROP"
    assert counts[0]["location"].startswith("nft_do_chain+0x")
    assert counts[0]["count"] == N


def test_closed_udp_port_is_no_socket(lab: VethLab) -> None:
    rc, recs, err = watch("--reason", "SKB_DROP_REASON_NO_SOCKET", "--netns", str(lab.b.path),
                          "--cmd", send_cmd(lab, N, 7777))
    assert rc == 0, err
    got = drops(recs)
    assert len(got) == N
    assert {d["symbol"] for d in got} == {"__udp4_lib_rcv"}
    assert {d["dport"] for d in got} == {7777}


def test_ipv6_drop(lab: VethLab) -> None:
    lab.drop_udp(5555, v6=True)
    rc, recs, err = watch("--reason", "NETFILTER_DROP", "--daddr", lab.addr6_b,
                          "--cmd", send_cmd(lab, N, 5555, v6=True))
    assert rc == 0, err
    got = drops(recs)
    assert len(got) == N
    for d in got:
        assert d["family"] == "ipv6"
        assert (d["saddr"], d["daddr"]) == (lab.addr6_a, lab.addr6_b)
        assert d["dport"] == 5555 and d["ifname"] == "veth-b"


def test_tcp_syn_to_closed_port_drops_in_tcp_v4_rcv(lab: VethLab) -> None:
    rc, recs, err = watch("--proto", "tcp", "--dport", "7778", "--location", "tcp_v4_rcv",
                          "--cmd", syn_cmd(lab, 7778))
    assert rc == 0, err
    got = drops(recs)
    assert len(got) >= 1
    assert all(d["symbol"] == "tcp_v4_rcv" and d["dport"] == 7778 for d in got)
    assert got[0]["reason"] == "NO_SOCKET"


def test_excluding_filter_sees_nothing(lab: VethLab) -> None:
    lab.drop_udp(5555)
    rc, recs, err = watch("--reason", "NETFILTER_DROP", "--dport", "5556", "--stats",
                          "--cmd", send_cmd(lab, N, 5555))
    assert rc == 0, err
    final = [r for r in recs if r["type"] == "stats" and r["final"]][0]
    assert final["counts"] == [] and final["matched"] == 0
    assert final["seen"] >= N  # the probe ran on every drop, and the filter excluded them


def test_netns_ifname_and_location_filters_together(lab: VethLab) -> None:
    lab.drop_udp(5555)
    rc, recs, err = watch("--netns", lab.b.name, "--ifname", "veth-b", "--location",
                          "nft_do_chain", "--saddr", "10.77.9.0/24", "--stack",
                          "--cmd", send_cmd(lab, N, 5555))
    assert rc == 0, err
    got = drops(recs)
    assert len(got) == N
    frames = [f["symbol"] for f in got[0]["stack"]]
    assert "nf_hook_slow" in frames
    # The wrong interface excludes everything.
    rc, recs, err = watch("--ifname", "veth-a", "--location", "nft_do_chain",
                          "--cmd", send_cmd(lab, N, 5555))
    assert rc == 0 and drops(recs) == []


def test_count_stops_early_and_cmd_status_is_passed_on(lab: VethLab) -> None:
    lab.drop_udp(5555)
    rc, recs, _ = watch("--count", "5", "--dport", "5555", "--cmd", send_cmd(lab, N, 5555))
    assert rc == 0
    assert len(drops(recs)) == 5
    rc, _, _ = watch("--duration", "5", "--cmd", "exit 7")
    assert rc == 7


def test_unknown_reason_exits_2_with_suggestion() -> None:
    proc = subprocess.run([*KDBG, "watch", "--reason", "NETFILTER_DORP"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "NETFILTER_DROP" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_vmlinux_of_another_kernel_is_one_line_and_nothing_attached(tmp_path: Path) -> None:
    """--vmlinux must be the running kernel's build: lines from another would be wrong."""
    from tests.unit.test_droplines import build

    fake = build(tmp_path)  # a real ELF with DWARF, of "9.9.9-test"
    proc = subprocess.run([*KDBG, "watch", "--vmlinux", str(fake), "--count", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"{fake} is not the target's kernel: it is 9.9.9-test" in proc.stderr
    assert "kdbg: watching" not in proc.stderr


def test_text_output_one_aligned_line_per_drop(lab: VethLab) -> None:
    lab.drop_udp(5555)
    proc = subprocess.run([*KDBG, "watch", "--dport", "5555", "--cmd", send_cmd(lab, N, 5555)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("TIME") and len(lines) == N + 1
    col = lines[0].index("LOCATION")
    assert all(line[col:].startswith("nft_do_chain+0x") for line in lines[1:])
    assert f"{N} drops matched, 0 lost" in proc.stderr


def test_not_root_is_one_clear_line() -> None:
    # nobody, keeping only CAP_DAC_READ_SEARCH so it can read a clone under /root (mode
    # 700): reading files is all it may do, loading BPF is not
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
                           *KDBG, "watch"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("kdbg: error: loading BPF needs root "
                                   "(or CAP_BPF with CAP_PERFMON) (run with sudo)")


def test_print_bpf_shows_the_filters_as_c() -> None:
    proc = subprocess.run([*KDBG, "watch", "--reason", "NO_SOCKET", "--dport", "53",
                           "--print-bpf"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "int kdbg_on_kfree_skb(__u64 *ctx)" in proc.stdout
    code = ReasonTable.from_tpformat(tpformat.load("skb", "kfree_skb")).code("NO_SOCKET")
    assert f"if (!(reason == {code})) return 0;" in proc.stdout
    assert "dport == 53" in proc.stdout
    assert "{{" not in proc.stdout


def test_doctor_passes_here() -> None:
    proc = subprocess.run([*KDBG, "doctor", "--json"], capture_output=True, text=True,
                          timeout=60)
    checks = {c["check"]: c for c in map(json.loads, proc.stdout.splitlines())}
    assert proc.returncode == 0, proc.stdout
    for name in ("privileges", "tracefs", "tracepoint", "btf", "kallsyms", "bcc", "gdb"):
        assert checks[name]["ok"], checks[name]


def rule_count(lab: VethLab) -> int:
    """The DROP rule's own packet counter (iptables -nvxL: nftables counts it)."""
    out = lab.b.run(["iptables", "-nvxL", "INPUT"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "dpt:5555" in line)


def test_flood_every_drop_is_printed_or_summarized(lab: VethLab) -> None:
    """300,000 datagrams into a DROP rule, faster than kdbg prints them: the ring
    overruns, the kernel counts the rest per key, and printed + summarized is the rule's
    own counter and the kernel's matched count, exactly; nothing is lost, and every
    printed NETFILTER_DROP carries its rule."""
    count = 300_000
    lab.drop_udp(5555)
    before = rule_count(lab)
    code = FLOOD_UDP_CODE.format(src=lab.addr_a, dst=lab.addr_b, sport=40000, dport=5555,
                                 count=count)
    flood = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", code])
    rc, recs, err = watch("--netns", lab.b.name, "--reason", "NETFILTER_DROP", "--cmd", flood,
                          timeout=600)
    assert rc == 0, err
    counted = rule_count(lab) - before
    assert counted == count
    [summary] = [r for r in recs if r["type"] == "summary"]
    printed = drops(recs)
    more = [r for r in recs if r["type"] == "more"]
    assert more, "the ring never overran: nothing to show"
    summarized = sum(m["count"] for m in more)
    assert summary["lost"] == 0
    assert summary["shown"] == len(printed) and summary["summarized"] == summarized
    assert len(printed) + summarized == summary["matched"] == counted
    for m in more:
        assert (m["reason"], m["dport"], m["netns"]) == ("NETFILTER_DROP", 5555, lab.b.inode)
    for d in printed:
        rule = d["cause"]["rule"]
        assert (rule["table"], rule["chain"]) == ("filter", "INPUT"), d["cause"]
        assert rule["text"].startswith("udp dport 5555 counter drop")
    print(f"\n{count} drops: {len(printed)} printed, {summarized} summarized in "
          f"{len(more)} lines")


def test_a_first_run_compiles_and_a_second_finds_it_compiled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program not in the cache is said so before bcc compiles it (the watch reads
    kallsyms meanwhile); once loaded, it is there for the next run."""
    from kdbg.drops.watch import Watch, WatchConfig
    from kdbg.trace.probe import DropProbe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    watch = Watch(WatchConfig(count=1))
    try:
        probe = DropProbe(watch.text)
        assert not probe.cached()
        probe.load()
        probe.close()
        assert probe.cached() and DropProbe(watch.text).cached()
        assert list((tmp_path / "kdbg" / "bpf").glob("*.json"))
    finally:
        watch.close()
