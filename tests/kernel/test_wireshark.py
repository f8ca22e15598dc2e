"""kdbg's fields in Wireshark: ``kdbg watch --pcap`` on real drops of known counts in a
throw-away namespace pair, then tshark (Debian's 4.0) with kdbg's dissector: every
display filter on a kdbg field counts exactly the drops it names.

23 datagrams into an iptables DROP rule, 17 to a closed IPv4 port, 7 to a closed
IPv6 port, 5 IPv6 ones into an nftables drop rule. An nftables chain before them marks
the first kind 0x2a and, matching on ``ct state``, has conntrack track them all; its
(empty) nat chain gives each new entry its IPS_DST_NAT_DONE bit. A drop by a rule
carries its entry's state, status and original tuple; a NO_SOCKET drop none (UDP
resets the skb's conntrack before it drops)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdbg.demo.throwaway import PY, VethLab
from tests import tshark as tsharkrun
from tests.conftest import need

KDBG = [sys.executable, "-m", "kdbg"]

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

NFT = """table inet kdbgws {
 chain pre { type filter hook prerouting priority -150; policy accept;
  udp dport 5555 meta mark set 0x2a; ct state new counter; }
 chain nat { type nat hook prerouting priority -100; policy accept; }
 chain in { type filter hook input priority 10; policy accept; udp dport 6666 drop; }
}
"""


def count(pcap: Path, display_filter: str) -> int:
    proc = subprocess.run(tsharkrun.argv("-r", str(pcap), "-Y", display_filter,
                                         "-T", "fields", "-e", "frame.number"),
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
        lab.b.run(["nft", "-f", "-"], input_=NFT)
        plan = [(lab.addr_b, lab.addr_a, 5555, 23), (lab.addr_b, lab.addr_a, 7777, 17),
                (lab.addr6_b, lab.addr6_a, 7777, 7), (lab.addr6_b, lab.addr6_a, 6666, 5)]
        cmd = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", SEND.format(plan=plan)])
        proc = subprocess.run([*KDBG, "watch", "--pcap", str(out), "--netns", lab.b.name,
                               "--proto", "udp", "--cmd", cmd],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "52 packets written" in proc.stderr, proc.stderr
        inode = os.stat(f"/var/run/netns/{lab.b.name}").st_ino
        return out, inode, lab.b.name


@pytest.mark.parametrize("display_filter, n", [
    ('kdbg.reason == "NETFILTER_DROP"', 28),
    ('kdbg.reason == "NO_SOCKET"', 24),
    ('kdbg.reason == "NO_SOCKET" && ipv6', 7),
    ('kdbg.symbol == "nft_do_chain"', 28),
    ('kdbg.location contains "__udp6_lib_rcv+0x"', 7),
    ("kdbg.ifname == \"veth-b\"", 52),
    ("kdbg.ifindex == 2", 52),
    ('kdbg.rule contains "table ip filter chain INPUT rule handle "', 23),
    ('kdbg.rule contains "table inet kdbgws chain in rule handle "', 5),
    ('kdbg.cause contains "udp dport 5555"', 23),
    ('kdbg.cause contains "no udp socket is bound on 10.77.128.2:7777"', 17),
    ('kdbg.cause contains "no udp socket is bound on [fd77:128::2]:7777"', 7),
    ("kdbg.cause_established == 1", 52),
    ("kdbg.mark == 0x2a", 23),
    ("kdbg.mark == 0", 29),
    ('kdbg.ct_state == "new"', 28),
    ('kdbg.ct_state == "invalid"', 24),
    ("kdbg.ct_reply == 0", 28),
    ("kdbg.ct_reply == 1", 0),
    ("kdbg.ct_zone == 0", 28),
    ("kdbg.ct_mark == 0", 28),
    ("kdbg.ct_status == 0x100", 28),
    ("kdbg.ct_status & 0x100", 28),
    ("kdbg.ct_status & 0x8", 0),  # none confirmed: the rules dropped them first
    ('kdbg.ct_orig_family == "ipv4"', 23),
    ('kdbg.ct_orig_family == "ipv6"', 5),
    ('kdbg.ct_orig_proto == "udp"', 28),
    ("kdbg.ct_orig_saddr == 10.77.128.1", 23),
    ("kdbg.ct_orig_daddr == 10.77.128.0/24", 23),
    ("kdbg.ct_orig_saddr6 == fd77:128::1", 5),
    ("kdbg.ct_orig_daddr6 == fd77:128::2", 5),
    ("kdbg.ct_orig_sport == 40000", 28),
    ("kdbg.ct_orig_dport == 6666", 5),
    ("kdbg.ct_orig_dport == 5555 && kdbg.mark == 0x2a", 23),
    # no NAT here: each reply tuple is its original one reversed
    ('kdbg.ct_reply_family == "ipv6" && kdbg.ct_reply_proto == "udp"', 5),
    ("kdbg.ct_reply_saddr == 10.77.128.2 && kdbg.ct_reply_daddr == 10.77.128.1", 23),
    ("kdbg.ct_reply_saddr6 == fd77:128::2 && kdbg.ct_reply_daddr6 == fd77:128::1", 5),
    ("kdbg.ct_reply_sport == 6666", 5),
    ("kdbg.ct_reply_dport == 40000", 28),
    ("kdbg", 52),
    ("!kdbg", 0),
])
def test_each_field_filters_exactly(pcap: tuple[Path, int, str], display_filter: str,
                                    n: int) -> None:
    assert count(pcap[0], display_filter) == n


def test_namespace_fields(pcap: tuple[Path, int, str]) -> None:
    path, inode, name = pcap
    assert count(path, f"kdbg.netns == {inode}") == 52
    assert count(path, f"kdbg.netns == {inode + 1}") == 0
    assert count(path, f'kdbg.netns_name == "{name}"') == 52


def test_the_rule_handle_is_the_rules(pcap: tuple[Path, int, str]) -> None:
    proc = subprocess.run(tsharkrun.argv("-r", str(pcap[0]), "-Y",
                                         'kdbg.rule contains "table ip filter"', "-T", "fields",
                                         "-e", "kdbg.rule_handle", "-e", "kdbg.rule"),
                          capture_output=True, text=True, timeout=120)
    rows = set(proc.stdout.splitlines())
    [row] = rows
    handle, rule = row.split("\t")
    assert rule == f"table ip filter chain INPUT rule handle {handle}"
    assert count(pcap[0], f"kdbg.rule_handle == {handle}") == 23
