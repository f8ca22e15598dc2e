"""``ct reply`` decided from the drop's conntrack entry: in a throw-away namespace pair,
a's postrouting source-NATs UDP to 7941 to a second address of a's, and a's output
chain drops ``ct reply ip daddr`` of that address, ``ct reply proto-dst 40001``, then
UDP to 7942. a sends 24 datagrams to 7941 from port 40000: the first leaves (its entry
gets the NAT'd reply tuple at postrouting), the next 23 are dropped at output by the
first rule, though each still shows a's own address; then 13 to 7942 from port 40001
and 7 from port 40002. Each drop must carry its entry's reply tuple and be named to
its exact rule."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

from kdbg.demo.throwaway import PY, VethLab

KDBG = [sys.executable, "-m", "kdbg"]
RULESET = """table inet kdbgr {{
 chain post {{
  type nat hook postrouting priority srcnat; policy accept;
  udp dport 7941 snat ip to {a2}
 }}
 chain out {{
  type filter hook output priority 0; policy accept;
  ct reply ip daddr {a2} drop
  meta l4proto udp ct reply proto-dst 40001 drop
  udp dport 7942 drop
 }}
}}
"""
SEND = r"""
import socket, time
def udp(n, sport, dport):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(({a!r}, sport))
    for i in range(n):
        try:
            s.sendto(b'kdbg', ({b!r}, dport))
        except PermissionError:  # dropped at output
            pass
    s.close()
udp(24, 40000, 7941)
udp(13, 40001, 7942)
udp(7, 40002, 7942)
time.sleep(0.2)
"""


def test_each_flow_named_to_its_rule_by_the_entrys_reply_tuple() -> None:
    with VethLab(prefix="kdbgc25rp", subnet=136) as lab:
        a, b, a2 = lab.addr_a, lab.addr_b, "10.77.136.9"
        lab.a.run(["ip", "addr", "add", f"{a2}/24", "dev", "veth-a"])
        lab.a.run(["nft", "-f", "-"], input_=RULESET.format(a2=a2))
        listing = lab.a.run(["nft", "-a", "list", "chain", "inet", "kdbgr", "out"]).stdout
        handles = [int(h) for h in re.findall(r"drop # handle (\d+)", listing)]
        send = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c",
                           SEND.format(a=a, b=b)])
        proc = subprocess.run([*KDBG, "watch", "--json", "--netns", lab.a.name,
                               "--reason", "NETFILTER_DROP", "--proto", "udp",
                               "--cmd", send], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    drops = [r for r in map(json.loads, proc.stdout.splitlines()) if r["type"] == "drop"]
    assert len(drops) == 23 + 13 + 7
    flows: dict[tuple[int, str], list[dict[str, object]]] = {}
    for d in drops:
        reply = d["ct_reply_tuple"]
        assert isinstance(reply, dict)
        # the reply comes from the destination, to the (translated) source
        assert (reply["family"], reply["proto"], reply["saddr"], reply["sport"]) == (
            "ipv4", "udp", b, d["dport"])
        assert d["saddr"] == a and reply["dport"] == d["sport"]
        flows.setdefault((reply["dport"], reply["daddr"]), []).append(d)
    for key, count, handle in (((40000, a2), 23, handles[0]),
                               ((40001, a), 13, handles[1]),
                               ((40002, a), 7, handles[2])):
        assert len(flows[key]) == count
        for d in flows[key]:
            c = d["cause"]
            assert isinstance(c, dict)
            assert c["established"] is True, c["summary"]
            assert c["rule"]["handle"] == handle
            assert "not_evaluated" not in c
