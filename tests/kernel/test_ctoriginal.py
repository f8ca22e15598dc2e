"""``ct original`` decided from the drop's conntrack entry: in a throw-away namespace
pair, b's prerouting rewrites UDP to 7931 to its own port 7932 (DNAT), and its input
chain drops ``ct original proto-dst 7931``, ``ct original ip saddr`` of a, then UDP to
7932. a sends 23 datagrams to 7931 and 13 to 7932 from port 40000 and 7 to 7932 from
port 40001. Each drop must carry its entry's original tuple (port 7931 for the DNAT'd
flow, while the packet says 7932) and be named to its exact rule."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

from kdbg.demo.throwaway import PY, VethLab

KDBG = [sys.executable, "-m", "kdbg"]
RULESET = """table inet kdbgo {{
 chain pre {{
  type nat hook prerouting priority dstnat; policy accept;
  udp dport 7931 dnat ip to {b}:7932
 }}
 chain in {{
  type filter hook input priority 0; policy accept;
  meta l4proto udp ct original proto-dst 7931 drop
  udp sport 40000 ct original ip saddr {a} drop
  udp dport 7932 drop
 }}
}}
"""
SEND = r"""
import socket, time
def udp(n, sport, dport):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(({a!r}, sport))
    for i in range(n):
        s.sendto(b'kdbg', ({b!r}, dport))
    s.close()
udp(23, 40000, 7931)
udp(13, 40000, 7932)
udp(7, 40001, 7932)
time.sleep(0.2)
"""


def test_each_flow_named_to_its_rule_by_the_entrys_original_tuple() -> None:
    with VethLab(prefix="kdbgc25or", subnet=135) as lab:
        lab.b.run(["nft", "-f", "-"], input_=RULESET.format(a=lab.addr_a, b=lab.addr_b))
        listing = lab.b.run(["nft", "-a", "list", "chain", "inet", "kdbgo", "in"]).stdout
        handles = [int(h) for h in re.findall(r"drop # handle (\d+)", listing)]
        send = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c",
                           SEND.format(a=lab.addr_a, b=lab.addr_b)])
        proc = subprocess.run([*KDBG, "watch", "--json", "--netns", lab.b.name,
                               "--reason", "NETFILTER_DROP", "--proto", "udp",
                               "--cmd", send], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        a, b = lab.addr_a, lab.addr_b
    drops = [r for r in map(json.loads, proc.stdout.splitlines()) if r["type"] == "drop"]
    assert len(drops) == 23 + 13 + 7
    flows: dict[tuple[int, int], list[dict[str, object]]] = {}
    for d in drops:
        orig = d["ct_original"]
        assert isinstance(orig, dict)
        assert (orig["family"], orig["proto"], orig["saddr"], orig["daddr"]) == (
            "ipv4", "udp", a, b)
        assert d["dport"] == 7932 and orig["sport"] == d["sport"]
        flows.setdefault((orig["sport"], orig["dport"]), []).append(d)
    for key, count, handle in (((40000, 7931), 23, handles[0]),
                               ((40000, 7932), 13, handles[1]),
                               ((40001, 7932), 7, handles[2])):
        assert len(flows[key]) == count
        for d in flows[key]:
            c = d["cause"]
            assert isinstance(c, dict)
            assert c["established"] is True, c["summary"]
            assert c["rule"]["handle"] == handle
            assert "not_evaluated" not in c
