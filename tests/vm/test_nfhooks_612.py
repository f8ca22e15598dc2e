"""Hooks at the drop on Debian's 6.12 (``--kernel debian:6.12``), whose nfnetlink_hook
module answers ``nft list hooks``: in a guest namespace, iptables-legacy drops UDP to
7911 in filter INPUT and UDP to 7913 in mangle PREROUTING beside an nftables chain at
input. kdbg in the guest must take the hook list from ``nft list hooks``, name the
x_tables tables (by their priority: neither that command nor 6.12's memory, where
x_tables is a module, names them), blame each drop on its function exactly as many
times as sent, and its own read of the same hooks from kernel memory must agree."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.vm.conftest import debian_612_lab, lab_name

NAME = lab_name("nfh")
ROOT = Path(__file__).resolve().parents[2]
NS = "kdbgnfh"
SETUP = f"""set -e
modprobe nfnetlink_hook
ip netns add {NS}
ip -n {NS} link set lo up
ip netns exec {NS} iptables-legacy -A INPUT -p udp --dport 7911 -j DROP
ip netns exec {NS} iptables-legacy -t mangle -A PREROUTING -p udp --dport 7913 -j DROP
echo 'table inet kdbgh {{ chain in {{ type filter hook input priority -10; }}; }}' \\
  | ip netns exec {NS} nft -f -
"""
SEND = ("import socket\ns = socket.socket(2, 2)\n"
        "for p in [7911] * 23 + [7913] * 7: s.sendto(b'x', ('127.0.0.1', p))\n")
MEMORY = f"""
import json, os, sys
sys.path.insert(0, {str(ROOT)!r})
from kdbg.causes import netnsref, nfhooks
ns = netnsref.find(os.stat('/var/run/netns/{NS}').st_ino)
out = {{}}
for hook in ('prerouting', 'input'):
    h = nfhooks.reader().read(ns, 'ipv4', hook)
    out[hook] = [[f.priority, f.function, f.module, f.kind] for f in h.functions]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    from kdbg import lab as labmod

    with debian_612_lab(NAME):
        done = labmod.run(NAME, ["sh", "-c", SETUP])
        assert done.status == 0, done.stderr.decode()
        yield NAME


def guest(lab: str, script: str, timeout: float = 900) -> str:
    from kdbg import lab as labmod
    done = labmod.run(lab, ["sh", "-c", f"cd {shlex.quote(str(ROOT))} && {script}"],
                      timeout=timeout)
    assert done.status == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode()


@pytest.fixture(scope="module")
def diagnosed(lab: str) -> dict[int, dict[str, Any]]:
    send = shlex.join(["ip", "netns", "exec", NS, "python3", "-c", SEND])
    out = guest(lab, shlex.join([sys.executable, "-m", "kdbg", "diagnose", "--json",
                                 "--netns", NS, "--reason", "NETFILTER_DROP",
                                 "--cmd", send]))
    recs = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return {r["example"]["dport"]: r for r in recs if r["type"] == "diagnosis"}


def test_filter_drop_blamed_from_nft_list_hooks(diagnosed: dict[int, dict[str, Any]]) -> None:
    rec = diagnosed[7911]
    assert rec["count"] == 23 and rec["established"] is True, rec["cause"]
    assert rec["hooks"]["source"] == "nft list hooks"
    assert [(f["priority"], f["function"], f.get("table")) for f in
            rec["hooks"]["functions"]] == [
        (-150, "iptable_mangle_hook", "mangle"),
        (-10, "nft_do_chain (inet kdbgh in)", "inet kdbgh in"),
        (0, "ipt_do_table", "filter")]
    assert (rec["dropped_by"]["function"], rec["dropped_by"]["table"]) == (
        "ipt_do_table", "filter")
    assert "iptables mangle has no DROP or REJECT rule for input" in rec["cause"]


def test_mangle_drop_blamed_from_nft_list_hooks(diagnosed: dict[int, dict[str, Any]]) -> None:
    rec = diagnosed[7913]
    assert rec["count"] == 7 and rec["established"] is True, rec["cause"]
    assert rec["hooks"]["source"] == "nft list hooks"
    assert (rec["dropped_by"]["function"], rec["dropped_by"]["table"]) == (
        "iptable_mangle_hook", "mangle")


def test_kernel_memory_agrees_with_nft_list_hooks(
        lab: str, diagnosed: dict[int, dict[str, Any]]) -> None:
    memory = json.loads(guest(lab, shlex.join([sys.executable, "-c", MEMORY])))
    for hook, port in (("input", 7911), ("prerouting", 7913)):
        listed = diagnosed[port]["hooks"]["functions"]
        assert [m[0] for m in memory[hook]] == [f["priority"] for f in listed]
        assert [m[2] for m in memory[hook]] == [f["module"] for f in listed]
        for m, f in zip(memory[hook], listed, strict=True):
            assert m[3] == f.get("kind")
            if m[3] != "nftables":
                assert m[1] == f["function"]
