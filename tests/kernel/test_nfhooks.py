"""The hooks at the drop, on the running kernel: in a throw-away namespace pair, b's
iptables-legacy (x_tables, not nftables) drops UDP to 7911 in filter INPUT, IPv6 UDP to
7912 in ip6tables' filter INPUT and UDP to 7913 in mangle PREROUTING; an nftables chain
at input (priority -10) accepts everything. ``kdbg diagnose`` must list the hook
functions registered at each drop's hook in b, in the kernel's order with the
priorities the kernel gives its tables, and blame each drop on the right one with its
table's name, exactly as many times as the packets sent.

Where the kernel has no nfnetlink_hook (this host's 6.18, Debian's 6.1) the list comes
from kernel memory; the test says which it got.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from typing import Any

import pytest

from kdbg.demo.throwaway import PY, VethLab
from kdbg.symbols.btf import Btf
from tests.kernel.conftest import need_iptables_legacy

KDBG = [sys.executable, "-m", "kdbg"]

SEND = r"""
import socket, time
def udp(n, fam, src, dst, dport):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((src, 40000))
    for i in range(n):
        s.sendto(b'kdbg', (dst, dport))
    s.close()
udp(23, socket.AF_INET, {a!r}, {b!r}, 7911)
udp(13, socket.AF_INET6, {a6!r}, {b6!r}, 7912)
udp(7, socket.AF_INET, {a!r}, {b!r}, 7913)
time.sleep(0.2)
"""
NFT = "table inet kdbgh {\n chain in { type filter hook input priority -10; policy accept; }\n}\n"


def priorities() -> dict[str, int]:
    """The kernel's own priorities of iptables' tables (enum nf_ip_hook_priorities)."""
    return Btf.load().enum("nf_ip_hook_priorities")


@pytest.fixture(scope="module")
def report() -> dict[int, dict[str, Any]]:
    need_iptables_legacy()
    with VethLab(prefix="kdbgc25nfh", subnet=131) as lab:
        b = lab.b
        b.run(["iptables-legacy", "-A", "INPUT", "-p", "udp", "--dport", "7911", "-j", "DROP"])
        b.run(["ip6tables-legacy", "-A", "INPUT", "-p", "udp", "--dport", "7912",
               "-j", "DROP"])
        b.run(["iptables-legacy", "-t", "mangle", "-A", "PREROUTING", "-p", "udp",
               "--dport", "7913", "-j", "DROP"])
        b.run(["nft", "-f", "-"], input_=NFT)
        send = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", SEND.format(
            a=lab.addr_a, b=lab.addr_b, a6=lab.addr6_a, b6=lab.addr6_b)])
        proc = subprocess.run([*KDBG, "diagnose", "--json", "--netns", b.name,
                               "--reason", "NETFILTER_DROP", "--cmd", send],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        hooks_listed = b.run(["nft", "list", "hooks"]).stdout
    out: dict[int, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if rec["type"] == "diagnosis":
            assert rec["example"]["dport"] not in out, "one cause per port"
            out[rec["example"]["dport"]] = rec
    out[0] = {"nft_list_hooks": hooks_listed}
    return out


def functions(rec: dict[str, Any]) -> list[tuple[int, str, str | None, str | None]]:
    return [(f["priority"], f["function"], f.get("kind"), f.get("table"))
            for f in rec["hooks"]["functions"]]


def test_the_source_is_kernel_memory_where_nft_lists_no_hooks(
        report: dict[int, dict[str, Any]]) -> None:
    expected = "kernel memory" if not report[0]["nft_list_hooks"].strip() else "nft list hooks"
    for port in (7911, 7912, 7913):
        assert report[port]["hooks"]["source"] == expected


def test_filter_input_drop_blamed_on_ipt_do_table(report: dict[int, dict[str, Any]]) -> None:
    prio = priorities()
    rec = report[7911]
    assert rec["count"] == 23 and rec["established"] is True, rec["cause"]
    assert (rec["hook"], rec["hooks"]["family"], rec["hooks"]["hook"]) == (
        "input", "ipv4", "input")
    # In the kernel's order: mangle's wrapper, the nftables chain, filter.
    assert functions(rec) == [
        (prio["NF_IP_PRI_MANGLE"], "iptable_mangle_hook", "iptables", "mangle"),
        (-10, "nft_do_chain_inet", "nftables", "inet kdbgh in"),
        (prio["NF_IP_PRI_FILTER"], "ipt_do_table", "iptables", "filter")]
    assert rec["dropped_by"] == {"priority": prio["NF_IP_PRI_FILTER"],
                                 "function": "ipt_do_table", "module": None,
                                 "kind": "iptables", "table": "filter"}
    assert "iptables mangle has no DROP or REJECT rule for input" in rec["cause"]
    assert rec["confirm"].endswith("iptables-legacy -t filter -L -v -n --line-numbers")


def test_ipv6_drop_blamed_on_ip6t_do_table(report: dict[int, dict[str, Any]]) -> None:
    rec = report[7912]
    assert rec["count"] == 13 and rec["established"] is True, rec["cause"]
    assert rec["hooks"]["family"] == "ipv6"
    assert rec["dropped_by"]["function"] == "ip6t_do_table"
    assert (rec["dropped_by"]["kind"], rec["dropped_by"]["table"]) == ("ip6tables", "filter")
    # no ip6tables mangle table was made: nftables' chain and ip6tables' filter only
    assert [f[1] for f in functions(rec)] == ["nft_do_chain_inet", "ip6t_do_table"]


def test_mangle_prerouting_drop_blamed_on_its_hook(report: dict[int, dict[str, Any]]) -> None:
    prio = priorities()
    rec = report[7913]
    assert rec["count"] == 7 and rec["established"] is True, rec["cause"]
    assert rec["hook"] == "prerouting"
    assert functions(rec) == [
        (prio["NF_IP_PRI_MANGLE"], "iptable_mangle_hook", "iptables", "mangle")]
    assert rec["dropped_by"]["table"] == "mangle"
    assert rec["confirm"].endswith("iptables-legacy -t mangle -L -v -n --line-numbers")
