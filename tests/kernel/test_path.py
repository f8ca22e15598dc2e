"""kdbg path on the running kernel: pings through veths, a bridge and a router,
with the exact hop sequence asserted.

Every test builds its own namespaces and deletes them, also on failure; traffic
goes only between them. On veth the receiving hops run in the sender's softirq,
so one packet's hops arrive in order from one CPU.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kdbg.demo.throwaway import BridgeLab, Netns, VethLab, allow_ping, icmp_echo_argv, run_checked

KDBG = [sys.executable, "-m", "kdbg"]
IDENT = 4242


def kdbg_path(*args: str, cmd: list[str], timeout: float = 120
              ) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([*KDBG, "path", "--json", *args, "--cmd", shlex.join(cmd)],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def paths(records: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Records per packet, in the order they arrived."""
    out: dict[int, list[dict[str, Any]]] = {}
    for rec in records:
        if rec["type"] in ("hop", "end"):
            out.setdefault(rec["packet"], []).append(rec)
    return out


def hops(path: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(r["netns"], r["ifname"], r["tracepoint"]) for r in path if r["type"] == "hop"]


def end_of(path: list[dict[str, Any]]) -> dict[str, Any]:
    assert path[-1]["type"] == "end", path
    assert sum(r["type"] == "end" for r in path) == 1
    return path[-1]


@pytest.fixture
def veth() -> Iterator[VethLab]:
    with VethLab(prefix="kdbgpath", subnet=41) as lab:
        for ns in (lab.a, lab.b):
            allow_ping(ns)
        run_checked(icmp_echo_argv(lab.a, lab.addr_a, lab.addr_b, ident=1, timeout=3), check=False)
        yield lab


@pytest.fixture
def bridge() -> Iterator[BridgeLab]:
    with BridgeLab(prefix="kdbgpathbr", subnet=42) as lab:
        yield lab


TX, RX, CORE = "net:net_dev_queue", "net:netif_rx", "net:netif_receive_skb"


def test_ping_over_veth_request_and_reply(veth: VethLab) -> None:
    a, b = veth.a.inode, veth.b.inode
    rc, recs, err = kdbg_path("--icmp-id", str(IDENT), cmd=icmp_echo_argv(
        veth.a, veth.addr_a, veth.addr_b, ident=IDENT))
    assert rc == 0, err
    assert "kdbg: watching" in err
    got = paths(recs)
    assert len(got) == 2, recs
    request, reply = got[1], got[2]
    assert hops(request) == [(a, "veth-a", TX), (b, "veth-b", RX), (b, "veth-b", CORE)]
    assert hops(reply) == [(b, "veth-b", TX), (a, "veth-a", RX), (a, "veth-a", CORE)]
    for path, (src, dst, icmp_type) in ((request, (veth.addr_a, veth.addr_b, 8)),
                                        (reply, (veth.addr_b, veth.addr_a, 0))):
        for hop in path[:-1]:
            assert (hop["saddr"], hop["daddr"], hop["proto"]) == (src, dst, "icmp")
            assert (hop["icmp_type"], hop["icmp_id"], hop["icmp_seq"]) == (icmp_type, IDENT, 1)
            assert hop["family"] == "ipv4" and hop["netns_name"] in (veth.a.name, veth.b.name)
        times = [r["since_first_ns"] for r in path]
        assert times[0] == 0 and times == sorted(times)
        assert len({r["skb"] for r in path}) == 1
    req_end, rep_end = end_of(request), end_of(reply)
    assert req_end["fate"] == "consumed" and "reason" not in req_end
    assert req_end["netns"] == b and req_end["location"].startswith("icmp_rcv+0x")
    assert rep_end["fate"] == "consumed" and rep_end["netns"] == a
    assert rep_end["netns_name"] == veth.a.name
    summary = [r for r in recs if r["type"] == "summary"][0]
    assert summary["packets"] == 2 and summary["ended"] == 2 and summary["lost"] == 0


def test_ping_through_bridge_request_and_reply(bridge: BridgeLab) -> None:
    a, b, br = bridge.a.inode, bridge.b.inode, bridge.br.inode
    rc, recs, err = kdbg_path("--icmp-id", str(IDENT), "--proto", "icmp", cmd=icmp_echo_argv(
        bridge.a, bridge.addr_a, bridge.addr_b, ident=IDENT))
    assert rc == 0, err
    got = paths(recs)
    assert len(got) == 2, recs
    request, reply = got[1], got[2]
    assert hops(request) == [
        (a, "veth-a", TX), (br, "br-a", RX), (br, "br-a", CORE),
        (br, "br-b", TX), (b, "veth-b", RX), (b, "veth-b", CORE),
    ]
    assert hops(reply) == [
        (b, "veth-b", TX), (br, "br-b", RX), (br, "br-b", CORE),
        (br, "br-a", TX), (a, "veth-a", RX), (a, "veth-a", CORE),
    ]
    assert [h["netns_name"] for h in request[:-1]] == [
        bridge.a.name, bridge.br.name, bridge.br.name, bridge.br.name,
        bridge.b.name, bridge.b.name]
    assert {h["icmp_type"] for h in request[:-1]} == {8}
    assert {h["icmp_type"] for h in reply[:-1]} == {0}
    assert end_of(request)["fate"] == end_of(reply)["fate"] == "consumed"
    assert (end_of(request)["netns"], end_of(reply)["netns"]) == (b, a)


def test_drop_rule_ends_path_with_netfilter_drop(veth: VethLab) -> None:
    a, b = veth.a.inode, veth.b.inode
    veth.b.run(["iptables", "-A", "INPUT", "-p", "icmp", "-j", "DROP"])
    rc, recs, err = kdbg_path("--icmp-id", str(IDENT), cmd=icmp_echo_argv(
        veth.a, veth.addr_a, veth.addr_b, ident=IDENT, timeout=0.5))
    assert rc == 0, err
    got = paths(recs)
    assert list(got) == [1], recs  # no reply
    assert hops(got[1]) == [(a, "veth-a", TX), (b, "veth-b", RX), (b, "veth-b", CORE)]
    end = end_of(got[1])
    assert end["fate"] == "dropped" and end["reason"] == "NETFILTER_DROP"
    assert end["location"].startswith("nft_do_chain+0x")
    assert end["netns"] == b and end["ifname"] == "veth-b"


def test_udp_five_tuple_and_ipv6(veth: VethLab) -> None:
    a, b = veth.a.inode, veth.b.inode
    veth.b.run(["ip6tables", "-A", "INPUT", "-p", "udp", "--dport", "5555", "-j", "DROP"])
    code = ("import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
            f"s.bind(({veth.addr6_a!r}, 40000)); "
            f"[s.sendto(b'x', ({veth.addr6_b!r}, 5555)) for _ in range(3)]")
    rc, recs, err = kdbg_path("--proto", "udp", "--dport", "5555", cmd=[
        "ip", "netns", "exec", veth.a.name, "/usr/bin/python3", "-c", code])
    assert rc == 0, err
    got = paths(recs)
    assert len(got) == 3, recs
    for path in got.values():
        assert hops(path) == [(a, "veth-a", TX), (b, "veth-b", RX), (b, "veth-b", CORE)]
        for hop in path[:-1]:
            assert (hop["family"], hop["proto"]) == ("ipv6", "udp")
            assert (hop["saddr"], hop["sport"]) == (veth.addr6_a, 40000)
            assert (hop["daddr"], hop["dport"]) == (veth.addr6_b, 5555)
        assert end_of(path)["reason"] == "NETFILTER_DROP"


@pytest.fixture
def routed() -> Iterator[tuple[Netns, Netns, Netns]]:
    """``a`` -- ``r`` -- ``b``; ``r`` routes and DNATs 10.77.44.9 to ``b`` (10.77.45.2)."""
    a, r, b = Netns("kdbgpathnat-a"), Netns("kdbgpathnat-r"), Netns("kdbgpathnat-b")
    try:
        for ns in (a, r, b):
            run_checked(["ip", "netns", "add", ns.name])
            ns.run(["ip", "link", "set", "lo", "up"])
            allow_ping(ns)
        for ns, dev, peer, net in ((a, "veth-a", "r-a", 43), (b, "veth-b", "r-b", 45)):
            run_checked(["ip", "link", "add", dev, "netns", ns.name, "type", "veth",
                  "peer", "name", peer, "netns", r.name])
            ns.run(["ip", "addr", "add", f"10.77.{net}.2/24", "dev", dev])
            ns.run(["ip", "link", "set", dev, "up"])
            ns.run(["ip", "route", "add", "default", "via", f"10.77.{net}.1"])
            r.run(["ip", "addr", "add", f"10.77.{net}.1/24", "dev", peer])
            r.run(["ip", "link", "set", peer, "up"])
        r.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        r.run(["iptables", "-t", "nat", "-A", "PREROUTING", "-d", "10.77.44.9",
               "-j", "DNAT", "--to-destination", "10.77.45.2"])
        run_checked(icmp_echo_argv(a, "10.77.43.2", "10.77.44.9", ident=1, timeout=3), check=False)
        yield a, r, b
    finally:
        for ns in (a, r, b):
            if ns.path.exists():
                run_checked(["ip", "netns", "del", ns.name], check=False)


def test_packet_stays_tracked_through_dnat(routed: tuple[Netns, Netns, Netns]) -> None:
    a, r, b = routed
    rc, recs, err = kdbg_path("--daddr", "10.77.44.9", "--proto", "icmp", cmd=icmp_echo_argv(
        a, "10.77.43.2", "10.77.44.9", ident=IDENT))
    assert rc == 0, err
    got = paths(recs)
    request = got[1]
    assert hops(request) == [
        (a.inode, "veth-a", TX), (r.inode, "r-a", RX), (r.inode, "r-a", CORE),
        (r.inode, "r-b", TX), (b.inode, "veth-b", RX), (b.inode, "veth-b", CORE),
    ]
    assert [h["daddr"] for h in request[:-1]] == ["10.77.44.9"] * 3 + ["10.77.45.2"] * 3
    assert end_of(request)["fate"] == "consumed" and end_of(request)["netns"] == b.inode
    # The reply leaves b for 10.77.43.2, which the filter does not name: not tracked.
    assert len(got) == 1, recs
