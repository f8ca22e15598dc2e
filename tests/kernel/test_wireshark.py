"""kdbg's fields in Wireshark: ``kdbg watch --pcap`` on real drops of known counts in a
throw-away namespace pair, then tshark (Debian's 4.0) with kdbg's dissector: every
display filter on a kdbg field counts exactly the drops it names.

23 datagrams into an iptables DROP rule, 17 to a closed IPv4 port, 7 to a closed
IPv6 port."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdbg.demo.throwaway import PY, VethLab
from tests.conftest import need

KDBG = [sys.executable, "-m", "kdbg"]
LUA = Path(__file__).resolve().parents[2] / "kdbg" / "record" / "kdbg.lua"

SEND = r"""
import socket, time
for dst, src, port, n in {plan!r}:
    s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 40000))
    for i in range(n):
        s.sendto(b'kdbg', (dst, port))
    s.close()
time.sleep(0.2)
"""


def count(pcap: Path, display_filter: str) -> int:
    proc = subprocess.run(["tshark", "-X", f"lua_script:{LUA}", "-r", str(pcap),
                           "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Lua" not in proc.stderr, proc.stderr  # the script loaded without an error
    return len(proc.stdout.splitlines())


@pytest.fixture(scope="module")
def pcap(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    need(shutil.which("tshark") is not None, "tshark (Debian's): run scripts/setup.sh")
    out = tmp_path_factory.mktemp("ws") / "drops.pcapng"
    with VethLab(prefix="kdbgc25ws", subnet=128) as lab:
        lab.drop_udp(5555)
        plan = [(lab.addr_b, lab.addr_a, 5555, 23), (lab.addr_b, lab.addr_a, 7777, 17),
                (lab.addr6_b, lab.addr6_a, 7777, 7)]
        cmd = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", SEND.format(plan=plan)])
        proc = subprocess.run([*KDBG, "watch", "--pcap", str(out), "--netns", lab.b.name,
                               "--proto", "udp", "--cmd", cmd],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "47 packets written" in proc.stderr, proc.stderr
        inode = os.stat(f"/var/run/netns/{lab.b.name}").st_ino
        return out, inode, lab.b.name


@pytest.mark.parametrize("display_filter, n", [
    ('kdbg.reason == "NETFILTER_DROP"', 23),
    ('kdbg.reason == "NO_SOCKET"', 24),
    ('kdbg.reason == "NO_SOCKET" && ipv6', 7),
    ('kdbg.symbol == "nft_do_chain"', 23),
    ('kdbg.location contains "__udp6_lib_rcv+0x"', 7),
    ("kdbg.ifname == \"veth-b\"", 47),
    ("kdbg.ifindex == 2", 47),
    ('kdbg.rule contains "table ip filter chain INPUT rule handle "', 23),
    ('kdbg.cause contains "udp dport 5555"', 23),
    ('kdbg.cause contains "no udp socket is bound on 10.77.128.2:7777"', 17),
    ('kdbg.cause contains "no udp socket is bound on [fd77:128::2]:7777"', 7),
    ("kdbg.cause_established == 1", 47),
    ("kdbg", 47),
    ("!kdbg", 0),
])
def test_each_field_filters_exactly(pcap: tuple[Path, int, str], display_filter: str,
                                    n: int) -> None:
    assert count(pcap[0], display_filter) == n


def test_namespace_fields(pcap: tuple[Path, int, str]) -> None:
    path, inode, name = pcap
    assert count(path, f"kdbg.netns == {inode}") == 47
    assert count(path, f"kdbg.netns == {inode + 1}") == 0
    assert count(path, f'kdbg.netns_name == "{name}"') == 47


def test_the_rule_handle_is_the_rules(pcap: tuple[Path, int, str]) -> None:
    proc = subprocess.run(["tshark", "-X", f"lua_script:{LUA}", "-r", str(pcap[0]),
                           "-Y", 'kdbg.reason == "NETFILTER_DROP"', "-T", "fields",
                           "-e", "kdbg.rule_handle", "-e", "kdbg.rule"],
                          capture_output=True, text=True, timeout=120)
    rows = set(proc.stdout.splitlines())
    [row] = rows
    handle, rule = row.split("\t")
    assert rule == f"table ip filter chain INPUT rule handle {handle}"
    assert count(pcap[0], f"kdbg.rule_handle == {handle}") == 23
