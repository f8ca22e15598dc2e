"""``ct status`` decided from the drop: in a throw-away namespace pair, b's prerouting
rewrites UDP to 7620 to its own port 7621 (DNAT), and its input chain drops
`ct status dnat`, then UDP to 7622. a sends 11 datagrams to 7620 and 13 to 7622. Each
drop must carry its entry's status bits (the DNAT bit on the first flow only) and be
named to its exact rule, with nothing left undecided."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

from kdbg.demo.throwaway import PY, VethLab
from kdbg.symbols.btf import Btf

KDBG = [sys.executable, "-m", "kdbg"]
RULESET = """table inet kdbgs {{
 chain pre {{
  type nat hook prerouting priority dstnat; policy accept;
  udp dport 7620 dnat ip to {b}:7621
 }}
 chain in {{
  type filter hook input priority 0; policy accept;
  ct status dnat drop
  udp dport 7622 drop
 }}
}}
"""
SEND = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({a!r}, 40000))
for i in range(11):
    s.sendto(b'kdbg', ({b!r}, 7620))
for i in range(13):
    s.sendto(b'kdbg', ({b!r}, 7622))
time.sleep(0.2)
"""


def test_each_flow_named_to_its_rule_by_the_entrys_status() -> None:
    dnat = Btf.load().enum("ip_conntrack_status")["IPS_DST_NAT"]
    with VethLab(prefix="kdbgc25st", subnet=133) as lab:
        lab.b.run(["nft", "-f", "-"], input_=RULESET.format(b=lab.addr_b))
        listing = lab.b.run(["nft", "-a", "list", "chain", "inet", "kdbgs", "in"]).stdout
        status_rule = int(re.search(r"ct status dnat drop # handle (\d+)", listing)[1])
        port_rule = int(re.search(r"dport 7622 drop # handle (\d+)", listing)[1])
        send = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c",
                           SEND.format(a=lab.addr_a, b=lab.addr_b)])
        proc = subprocess.run([*KDBG, "watch", "--json", "--netns", lab.b.name,
                               "--reason", "NETFILTER_DROP", "--proto", "udp",
                               "--cmd", send], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    drops = [r for r in map(json.loads, proc.stdout.splitlines()) if r["type"] == "drop"]
    by_port: dict[int, list[dict[str, object]]] = {7621: [], 7622: []}
    for d in drops:
        by_port[d["dport"]].append(d)
    for port, count, nat, handle in ((7621, 11, True, status_rule),
                                     (7622, 13, False, port_rule)):
        assert len(by_port[port]) == count
        for d in by_port[port]:
            status = d["ct_status"]
            assert isinstance(status, int) and bool(status & dnat) is nat
            c = d["cause"]
            assert isinstance(c, dict)
            assert c["established"] is True, c["summary"]
            assert c["rule"]["handle"] == handle
            assert "not_evaluated" not in c
