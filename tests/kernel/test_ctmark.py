"""Mark and conntrack state on real drops, and the rules they decide: in a throw-away
namespace pair, namespace b loads tests/data/nft/marks.nft (table kdbgm: a prerouting
rule marks UDP to 7400; input drops mark 0x5, ct state new to 7500, ct state
established to 7600, ct state invalid to TCP 7700, and over a limit to 7800; table
kdbgz: UDP to 8200 gets conntrack zone 3 in a raw chain, UDP to 8300 ct mark 0x7 at
prerouting, and its input chain drops ct zone 3 and ct mark 0x7). Each flow's drops
must carry the mark, state, zone and ct mark the kernel gave them and be named to
the exact rule, with nothing left undecided but the limit."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from kdbg.demo.throwaway import PY, VethLab
from tests import tshark as tsharkrun
from tests.conftest import DATA

KDBG = [sys.executable, "-m", "kdbg"]

# b first sends from 7600 to a:40001, so a's datagrams from 40001 to b:7600 are the
# reply direction of b's flow: established in b's conntrack table.
PRIME = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({b!r}, 7600))
s.sendto(b'prime', ({a!r}, 40001))
"""

SEND = r"""
import socket, struct, time
A, B = {a!r}, {b!r}

def udp(n, dport, sport=40000):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((A, sport))
    for i in range(n):
        s.sendto(b'kdbg', (B, dport))
    s.close()

def csum(data):
    data += b'\0' * (len(data) % 2)
    t = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff

def syn_fin(n, dport):
    # SYN and FIN together: no valid TCP state, so conntrack leaves it without an entry
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    for i in range(n):
        hdr = struct.pack('!HHIIBBHHH', 40002, dport, i, 0, 5 << 4, 0x03, 1024, 0, 0)
        pseudo = socket.inet_aton(A) + socket.inet_aton(B) + struct.pack('!BBH', 0, 6, 20)
        c = csum(pseudo + hdr)
        s.sendto(hdr[:16] + struct.pack('!H', c) + hdr[18:], (B, 0))
    s.close()

udp(23, 7400)
udp(13, 7500)
udp(11, 7600, sport=40001)
syn_fin(7, 7700)
udp(23, 7800)
udp(5, 8200)
udp(3, 8300)
time.sleep(0.2)
"""


Scene = tuple[dict[int, list[dict[str, Any]]], dict[int, int], int, Path]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    pcap = tmp_path_factory.mktemp("ctmark") / "drops.pcapng"
    with VethLab(prefix="kdbgc25ct", subnet=130) as lab:
        lab.b.run(["nft", "-f", str(DATA / "nft" / "marks.nft")])
        listing = lab.b.run(["nft", "-a", "list", "ruleset"]).stdout
        handles = {int(m[1]): int(m[2])  # dport -> the handle of the rule that names it
                   for m in re.finditer(r"dport (\d+) .*# handle (\d+)", listing)}
        prime = shlex.join(["ip", "netns", "exec", lab.b.name, PY, "-c",
                            PRIME.format(a=lab.addr_a, b=lab.addr_b)])
        send = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c",
                           SEND.format(a=lab.addr_a, b=lab.addr_b)])
        proc = subprocess.run([*KDBG, "watch", "--json", "--netns", lab.b.name,
                               "--reason", "NETFILTER_DROP", "--cmd", f"{prime} && {send}"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        counted = lab.b.run(["nft", "list", "chain", "inet", "kdbgm", "in"]).stdout
        over = int(re.search(r"limit rate over 1/minute counter packets (\d+)", counted)[1])
        # The same flows again, recorded as pcapng for Wireshark's kdbg.mark and
        # kdbg.ct_state fields.
        rec = subprocess.run([*KDBG, "watch", "--pcap", str(pcap), "--netns", lab.b.name,
                              "--reason", "NETFILTER_DROP", "--cmd", f"{prime} && {send}"],
                             capture_output=True, text=True, timeout=300)
        assert rec.returncode == 0, rec.stderr
    by_port: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if rec["type"] == "drop":
            by_port[rec["dport"]].append(rec)
    return by_port, handles, over, pcap


@pytest.mark.parametrize("dport, count, mark, state, reply, zone, ct_mark, rule", [
    (7400, 23, 5, "new", False, 0, 0, "meta mark 0x00000005 drop"),
    (7500, 13, 0, "new", False, 0, 0, None),
    (7600, 11, 0, "established", True, 0, 0, None),
    (7700, 7, 0, "invalid", None, None, None, None),  # no entry: no zone, no ct mark
    (8200, 5, 0, "new", False, 3, 0, "ct zone 3 drop"),
    (8300, 3, 0, "new", False, 0, 7, "ct mark 0x00000007 drop"),
])
def test_each_flow_named_to_its_rule_by_mark_and_conntrack(
        scene: Scene, dport: int, count: int, mark: int, state: str, reply: bool | None,
        zone: int | None, ct_mark: int | None, rule: str | None) -> None:
    by_port, handles, _, _ = scene
    drops = by_port[dport]
    assert len(drops) == count
    for d in drops:
        assert (d["mark"], d["ct_state"], d.get("ct_reply")) == (mark, state, reply)
        assert (d.get("ct_zone"), d.get("ct_mark")) == (zone, ct_mark)
        c = d["cause"]
        assert c["established"] is True, c["summary"]
        if rule is None:  # the rule that names the port
            assert (c["rule"]["table"], c["rule"]["handle"]) == ("kdbgm", handles[dport])
        else:
            assert c["rule"]["text"] == f"{rule} # handle {c['rule']['handle']}"
        assert "not_evaluated" not in c and "by elimination" not in c["summary"]


def test_a_limit_is_all_that_stays_undecided(scene: Scene) -> None:
    by_port, handles, over, _ = scene
    drops = by_port[7800]
    assert 0 < len(drops) == over  # exactly the drops the rule's counter counted
    for d in drops:
        c = d["cause"]
        assert c["established"] is True and c["rule"]["handle"] == handles[7800]
        assert c["not_evaluated"] == ["limit"]


@pytest.mark.parametrize("display_filter, n", [
    ("kdbg.mark == 5", 23),
    ('kdbg.ct_state == "new" && udp.dstport == 7500', 13),
    ('kdbg.ct_state == "established"', 11),
    ('kdbg.ct_state == "invalid" && tcp.dstport == 7700', 7),
    ('kdbg.rule contains "table inet kdbgm " && kdbg.rule_handle == 7', 23),
    ("kdbg.ct_zone == 3", 5),
    ("kdbg.ct_mark == 7", 3),
])
def test_wiresharks_mark_and_ct_state_fields(scene: Scene, display_filter: str, n: int) -> None:
    proc = subprocess.run(tsharkrun.argv("-r", str(scene[3]), "-Y", display_filter,
                                         "-T", "fields", "-e", "frame.number"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == n
