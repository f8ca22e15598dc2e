"""Drops at the bridge's hooks, on the running kernel: ``a`` and ``b`` joined through a
bridge in a third namespace ``br``, where an nftables ``table bridge`` drops UDP to 7921
in its forward chain and UDP to 7922 in its prerouting chain (priority -200, before
br_netfilter), and br_netfilter hands the bridged packets to iptables-legacy, whose
filter FORWARD drops UDP to 7923 and ip6tables-legacy's IPv6 UDP to 7924. The bridge
device has an address of its own too, and ``br`` sends 5 datagrams from it to ``b``'s
UDP 7925, which the bridge table's output chain drops.

``kdbg diagnose`` must tell the bridge's own hooks (NFPROTO_BRIDGE, read from
``net.nf.hooks_bridge``) from IPv4's and IPv6's that br_netfilter ran, list the hook
functions registered at each, and name each drop's rule or blame its hook function,
exactly as many times as the packets sent.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from typing import Any

import pytest

from kdbg.demo.throwaway import PY, BridgeLab
from tests.conftest import need
from tests.kernel.conftest import need_iptables_legacy

KDBG = [sys.executable, "-m", "kdbg"]

SEND = r"""
import socket, time
for fam, src, dst, ports in ((socket.AF_INET, {a!r}, {b!r}, ((7921, 23), (7922, 13), (7923, 7))),
                             (socket.AF_INET6, {a6!r}, {b6!r}, ((7924, 11),))):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((src, 40000))
    for port, n in ports:
        for i in range(n):
            s.sendto(b'kdbg', (dst, port))
    s.close()
time.sleep(0.2)
"""
SEND_BR = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({src!r}, 40000))
for i in range(5):
    s.sendto(b'kdbg', ({b!r}, 7925))
time.sleep(0.2)
"""
BR_ADDR = "10.77.143.254"
NFT = """table bridge kdbgbr {
 chain brfwd { type filter hook forward priority 0; policy accept; udp dport 7921 drop; }
 chain brpre { type filter hook prerouting priority -200; policy accept; udp dport 7922 drop; }
 chain brout { type filter hook output priority 0; policy accept; udp dport 7925 drop; }
}
"""


@pytest.fixture(scope="module")
def report() -> dict[int, dict[str, Any]]:
    need_iptables_legacy()
    with BridgeLab(prefix="kdbgc25brh", subnet=143) as lab:
        br = lab.br
        need(br.run(["sh", "-c", "test -e /proc/sys/net/bridge/bridge-nf-call-iptables"],
                    check=False).returncode == 0,
             "the kernel has no br_netfilter (CONFIG_BRIDGE_NETFILTER, module br_netfilter)")
        br.run(["nft", "-f", "-"], input_=NFT)
        br.run(["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"])
        br.run(["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-ip6tables=1"])
        br.run(["iptables-legacy", "-A", "FORWARD", "-p", "udp", "--dport", "7923",
                "-j", "DROP"])
        br.run(["ip6tables-legacy", "-A", "FORWARD", "-p", "udp", "--dport", "7924",
                "-j", "DROP"])
        br.run(["ip", "addr", "add", f"{BR_ADDR}/24", "dev", "br0"])
        send = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", SEND.format(
            a=lab.addr_a, b=lab.addr_b, a6=lab.addr6_a, b6=lab.addr6_b)]) + " && " + \
            shlex.join(["ip", "netns", "exec", br.name, PY, "-c",
                        SEND_BR.format(src=BR_ADDR, b=lab.addr_b)])
        proc = subprocess.run([*KDBG, "diagnose", "--json", "--netns", br.name,
                               "--reason", "NETFILTER_DROP", "--proto", "udp",
                               "--cmd", send],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    out: dict[int, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if rec["type"] == "diagnosis":
            assert rec["example"]["dport"] not in out, "one cause per port"
            out[rec["example"]["dport"]] = rec
    assert sorted(out) == [7921, 7922, 7923, 7924, 7925], proc.stdout
    return out


def functions(rec: dict[str, Any]) -> list[tuple[int, str, str | None]]:
    return [(f["priority"], f["function"], f.get("table"))
            for f in rec["hooks"]["functions"]]


def test_bridge_forward_drop_named_to_its_rule(report: dict[int, dict[str, Any]]) -> None:
    rec = report[7921]
    assert rec["count"] == 23 and rec["established"] is True, rec["cause"]
    assert rec["rule"]["family"] == "bridge" and rec["rule"]["chain"] == "brfwd"
    assert rec["cause"].endswith(f"udp dport 7921 drop # handle {rec['rule']['handle']}")
    assert (rec["hook"], rec["hooks"]["family"]) == ("forward", "bridge")
    # nftables' chain (named after it) and br_netfilter's forward hook, both at 0
    assert ("nft_do_chain_bridge", "bridge kdbgbr brfwd") in [
        (f, t) for _, f, t in functions(rec)]
    assert "br_nf_forward" in [f for _, f, _ in functions(rec)]


def test_bridge_prerouting_drop_named_to_its_rule(report: dict[int, dict[str, Any]]) -> None:
    rec = report[7922]
    assert rec["count"] == 13 and rec["established"] is True, rec["cause"]
    assert rec["rule"]["chain"] == "brpre" and rec["rule"]["family"] == "bridge"
    assert (rec["hook"], rec["hooks"]["family"]) == ("prerouting", "bridge")
    # the kernel's order: the chain at -200, then br_netfilter's hook at NF_BR_PRI_BRNF
    assert functions(rec) == [(-200, "nft_do_chain_bridge", "bridge kdbgbr brpre"),
                              (0, "br_nf_pre_routing", None)]


def test_br_netfilter_ipv4_forward_drop_blamed_on_ipt_do_table(
        report: dict[int, dict[str, Any]]) -> None:
    rec = report[7923]
    assert rec["count"] == 7 and rec["established"] is True, rec["cause"]
    assert (rec["hook"], rec["hooks"]["family"]) == ("forward", "ipv4")
    assert rec["note"] == ("a bridged packet: br_netfilter ran ipv4's forward hook for it, "
                           "as net.bridge.bridge-nf-call-iptables is 1")
    assert (rec["dropped_by"]["function"], rec["dropped_by"]["table"]) == (
        "ipt_do_table", "filter")
    # the bridge table's chains are not IPv4's: not evaluated at IPv4's forward hook
    assert "rule" not in rec or rec["rule"] is None
    assert rec["confirm"].endswith("iptables-legacy -t filter -L -v -n --line-numbers")


def test_br_netfilter_ipv6_forward_drop_blamed_on_ip6t_do_table(
        report: dict[int, dict[str, Any]]) -> None:
    rec = report[7924]
    assert rec["count"] == 11 and rec["established"] is True, rec["cause"]
    assert (rec["hook"], rec["hooks"]["family"]) == ("forward", "ipv6")
    assert rec["note"].endswith("net.bridge.bridge-nf-call-ip6tables is 1")
    assert (rec["dropped_by"]["function"], rec["dropped_by"]["kind"]) == (
        "ip6t_do_table", "ip6tables")


def test_bridge_output_drop_named_to_its_rule(report: dict[int, dict[str, Any]]) -> None:
    # the bridge device's own datagram: __br_forward below br_dev_xmit is the output hook
    rec = report[7925]
    assert rec["count"] == 5 and rec["established"] is True, rec["cause"]
    assert rec["rule"]["chain"] == "brout" and rec["rule"]["family"] == "bridge"
    assert (rec["hook"], rec["hooks"]["family"]) == ("output", "bridge")
    assert functions(rec) == [(0, "nft_do_chain_bridge", "bridge kdbgbr brout")]
