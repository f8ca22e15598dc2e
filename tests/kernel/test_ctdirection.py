"""``ct direction`` decided from the drop: in a throw-away namespace pair, b drops UDP to
7610 in the reply direction with one rule and every other datagram to 7610 with the
next. b first sends from 7610 to a:40001, so a's 11 datagrams from 40001 are replies
(established, reply direction); a's 13 from 40000 start a new flow (original). Each
drop must carry its direction and be named to its exact rule, with nothing left
undecided."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

from kdbg.demo.throwaway import PY, VethLab

KDBG = [sys.executable, "-m", "kdbg"]
RULESET = """table inet kdbgd {
 chain in {
  type filter hook input priority 0; policy accept;
  udp dport 7610 ct direction reply drop
  udp dport 7610 drop
 }
}
"""
PRIME = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({b!r}, 7610))
s.sendto(b'prime', ({a!r}, 40001))
"""
SEND = r"""
import socket, time
def udp(n, sport):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(({a!r}, sport))
    for i in range(n):
        s.sendto(b'kdbg', ({b!r}, 7610))
    s.close()
udp(11, 40001)
udp(13, 40000)
time.sleep(0.2)
"""


def test_each_direction_named_to_its_rule() -> None:
    with VethLab(prefix="kdbgc25dir", subnet=132) as lab:
        lab.b.run(["nft", "-f", "-"], input_=RULESET)
        listing = lab.b.run(["nft", "-a", "list", "ruleset"]).stdout
        handles = [int(h) for h in re.findall(r"dport 7610 .*# handle (\d+)", listing)]
        prime = shlex.join(["ip", "netns", "exec", lab.b.name, PY, "-c",
                            PRIME.format(a=lab.addr_a, b=lab.addr_b)])
        send = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c",
                           SEND.format(a=lab.addr_a, b=lab.addr_b)])
        proc = subprocess.run([*KDBG, "watch", "--json", "--netns", lab.b.name,
                               "--reason", "NETFILTER_DROP", "--dport", "7610",
                               "--cmd", f"{prime} && {send}"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    drops = [r for r in map(json.loads, proc.stdout.splitlines()) if r["type"] == "drop"]
    by_sport: dict[int, list[dict[str, object]]] = {40000: [], 40001: []}
    for d in drops:
        by_sport[d["sport"]].append(d)
    reply_rule, plain_rule = handles
    for sport, count, state, reply, handle in ((40001, 11, "established", True, reply_rule),
                                               (40000, 13, "new", False, plain_rule)):
        assert len(by_sport[sport]) == count
        for d in by_sport[sport]:
            assert (d["ct_state"], d["ct_reply"]) == (state, reply)
            c = d["cause"]
            assert isinstance(c, dict)
            assert c["established"] is True, c["summary"]
            assert c["rule"]["handle"] == handle
            assert "not_evaluated" not in c
