"""Counters beside reasons, on real drops: datagrams into a socket with a tiny receive
buffer nobody reads (SOCKET_RCVBUFF) and to a closed port (NO_SOCKET) in a throw-away
namespace; ``kdbg diagnose`` must put UdpRcvbufErrors and UdpInErrors beside the first
and UdpNoPorts beside the second, each moved by exactly the number of drops."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from typing import Any

from kdbg.demo.throwaway import PY, VethLab

KDBG = [sys.executable, "-m", "kdbg"]

# Held in namespace b: a socket with a 1 KB buffer that reads nothing until told, then
# counts what its queue kept.
HOLD = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
s.bind(({b!r}, 8000))
print('ready', flush=True)
sys.stdin.readline()
s.setblocking(False)
kept = 0
while True:
    try:
        s.recv(2048)
    except BlockingIOError:
        break
    kept += 1
print(kept, flush=True)
"""

SEND = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({a!r}, 40000))
for i in range(23):
    s.sendto(b'k' * 1400, ({b!r}, 8000))
for i in range(17):
    s.sendto(b'k', ({b!r}, 7777))
time.sleep(0.2)
"""


def test_counters_moved_with_their_reasons_by_exactly_the_drops() -> None:
    with VethLab(prefix="kdbgc25ctr", subnet=125) as lab:
        holder = lab.b.popen([PY, "-c", HOLD.format(b=lab.addr_b)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
        try:
            assert holder.stdin is not None and holder.stdout is not None
            assert holder.stdout.readline() == b"ready\n"
            cmd = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c",
                              SEND.format(a=lab.addr_a, b=lab.addr_b)])
            proc = subprocess.run([*KDBG, "diagnose", "--netns", lab.b.name, "--json",
                                   "--cmd", cmd], capture_output=True, text=True, timeout=180)
            holder.stdin.write(b"\n")
            holder.stdin.flush()
            kept = int(holder.stdout.readline())
        finally:
            holder.kill()
            holder.wait()
        assert proc.returncode == 0, proc.stderr
        recs: list[dict[str, Any]] = [json.loads(x) for x in proc.stdout.splitlines()]
    dropped = 23 - kept
    assert 0 < dropped < 23
    by_reason = {r["reason"]: r for r in recs if r["type"] == "diagnosis"}
    rcvbuf, nosock = by_reason["SOCKET_RCVBUFF"], by_reason["NO_SOCKET"]
    assert rcvbuf["count"] == dropped
    assert rcvbuf["counters"] == [{"name": "UdpRcvbufErrors", "moved": dropped},
                                  {"name": "UdpInErrors", "moved": dropped}]
    assert nosock["count"] == 17
    assert nosock["counters"] == [{"name": "UdpNoPorts", "moved": 17}]
    [ns] = [r for r in recs if r["type"] == "counters"]
    assert ns["netns_name"] == "kdbgc25ctr-b"
    moved = {k: v["after"] - v["before"] for k, v in ns["moved"].items()}
    assert moved["UdpRcvbufErrors"] == dropped and moved["UdpNoPorts"] == 17
    assert moved["IpInReceives"] == 23 + 17  # every datagram sent, counted once
