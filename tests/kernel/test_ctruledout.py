"""Conntrack's own hook functions ruled out at an iptables-legacy drop: in a throw-away
namespace pair, b loads conntrack (an iptables-legacy ``-m conntrack`` rule) and drops
UDP to 7921 in filter INPUT, where nf_confirm runs after it, and UDP to 7923 in mangle
PREROUTING, after ipv4_conntrack_defrag and ipv4_conntrack_in. Each drop must be blamed
on the x_tables function, conntrack's functions ruled out from the drop's conntrack
entry (and, for the confirm hook, its namespace's unmoved ``insert_failed``), exactly as
many times as the packets sent.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from typing import Any

import pytest

from kdbg.demo.throwaway import PY, VethLab
from tests.conftest import need

KDBG = [sys.executable, "-m", "kdbg"]

SEND = r"""
import socket, time
def udp(n, src, dst, dport):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 40000))
    for i in range(n):
        s.sendto(b'kdbg', (dst, dport))
    s.close()
udp(23, {a!r}, {b!r}, 7921)
udp(11, {a!r}, {b!r}, 7923)
time.sleep(0.2)
"""


@pytest.fixture(scope="module")
def report() -> dict[int, dict[str, Any]]:
    need(shutil.which("iptables-legacy") is not None,
         "iptables-legacy is not installed (Debian's iptables package has it)")
    with VethLab(prefix="kdbgc25ct", subnet=133) as lab:
        b = lab.b
        b.run(["iptables-legacy", "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID",
               "-p", "udp", "--dport", "7929", "-j", "ACCEPT"])
        b.run(["iptables-legacy", "-A", "INPUT", "-p", "udp", "--dport", "7921", "-j", "DROP"])
        b.run(["iptables-legacy", "-t", "mangle", "-A", "PREROUTING", "-p", "udp",
               "--dport", "7923", "-j", "DROP"])
        send = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", SEND.format(
            a=lab.addr_a, b=lab.addr_b)])
        proc = subprocess.run([*KDBG, "diagnose", "--json", "--netns", b.name,
                               "--reason", "NETFILTER_DROP", "--cmd", send],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    out: dict[int, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if rec["type"] == "diagnosis":
            port = rec["example"]["dport"]
            assert port not in out, "one cause per port"
            out[port] = rec
    return out


def names(rec: dict[str, Any]) -> list[str]:
    return [f["function"] for f in rec["hooks"]["functions"]]


def test_input_drop_blamed_on_ipt_do_table_past_nf_confirm(
        report: dict[int, dict[str, Any]]) -> None:
    rec = report[7921]
    assert rec["count"] == 23 and rec["established"] is True, rec["cause"]
    assert "nf_confirm" in names(rec) and "ipt_do_table" in names(rec)
    assert rec["dropped_by"]["function"] == "ipt_do_table"
    assert ("nf_confirm: its conntrack entry has no helper and no sequence adjustment, "
            "and the namespace's conntrack insert_failed stayed") in rec["cause"]


def test_prerouting_drop_blamed_on_mangle_past_conntrack_in(
        report: dict[int, dict[str, Any]]) -> None:
    rec = report[7923]
    assert rec["count"] == 11 and rec["established"] is True, rec["cause"]
    assert names(rec)[:3] == ["ipv4_conntrack_defrag", "ipv4_conntrack_in",
                              "iptable_mangle_hook"]
    assert rec["dropped_by"]["function"] == "iptable_mangle_hook"
    for fn in ("ipv4_conntrack_defrag", "ipv4_conntrack_in"):
        assert (f"{fn} never leaves a conntrack entry on a packet it drops, and this one "
                "carries one (ct state new)") in rec["cause"]
