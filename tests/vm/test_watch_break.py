"""``kdbg watch --break`` end to end on the default lab (Debian 6.1 under TCG).

A DROP rule for UDP 5555 in the guest and a datagram a second into it; kdbg's
tracer runs in the guest, gdb reaches the guest through QEMU's stub.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

KDBG = [sys.executable, "-m", "kdbg"]
NAME = "breaktest"
PORT = 5555


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    need(os.geteuid() == 0, "the lab needs root (./run test)")
    from kdbg import lab as labmod

    with contextlib.suppress(Exception):
        labmod.down(NAME)
    labmod.up(labmod.LabConfig(name=NAME))
    traffic = None
    try:
        done = labmod.run(NAME, ["iptables", "-A", "INPUT", "-p", "udp", "--dport", str(PORT),
                                 "-j", "DROP"])
        assert done.status == 0, done.stderr
        traffic = labmod.stream(NAME, ["bash", "-c", f"while :; do echo x > "
                                       f"/dev/udp/127.0.0.1/{PORT}; sleep 1; done"])
        yield NAME
    finally:
        if traffic is not None:
            traffic.close()
        labmod.down(NAME)


def kdbg_json(*args: str, timeout: float = 900) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([*KDBG, "watch", "--json", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, recs, proc.stderr


def of(recs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in recs if r["type"] == kind]


def our_gdbs(lab: str) -> list[int]:
    """gdb processes still attached to the lab's endpoint (there must be none)."""
    from kdbg import lab as labmod

    port = labmod.gdb_endpoint(lab).rsplit(":", 1)[1]
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
                if b"gdb" in cmd.split(b" ")[0] and port.encode() in cmd:
                    pids.append(int(d.name))
    return pids


def assert_target_runs_clean(lab: str) -> None:
    """Drops still flow (the guest is not halted), and no kdbg gdb is left."""
    rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--count", "2")
    assert rc == 0, err
    assert len(of(recs, "drop")) == 2, err
    # nf_tables is a module: its line comes from the module's own debug .ko
    assert {(d["file"], type(d["line"])) for d in of(recs, "drop")} == {
        ("net/netfilter/nf_tables_core.c", int)}
    assert our_gdbs(lab) == []


def test_relayed_drops_get_file_and_line_from_the_labs_vmlinux(lab: str) -> None:
    """Without --break the guest's tracer streams to the host, which adds file:line
    from the lab's debug vmlinux (checked against the guest's /proc/version)."""
    from kdbg import lab as labmod

    closed = PORT + 44
    traffic = labmod.stream(lab, ["bash", "-c", f"while :; do echo x > "
                                  f"/dev/udp/127.0.0.1/{closed}; sleep 0.5; done"])
    try:
        rc, recs, err = kdbg_json("--lab", lab, "--reason", "NO_SOCKET", "--proto", "udp",
                                  "--dport", str(closed), "--count", "2")
    finally:
        traffic.close()
    assert rc == 0, err
    drops = of(recs, "drop")
    assert len(drops) == 2, err
    for d in drops:
        assert d["symbol"] == "__udp4_lib_rcv" and d["module"] is None
        assert d["file"] == "net/ipv4/udp.c" and isinstance(d["line"], int) and d["line"] > 0


def test_netfilter_drop_breaks_at_nft_do_chain(lab: str) -> None:
    rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--proto", "udp",
                              "--dport", str(PORT), "--break")
    assert rc == 0, err
    armed = of(recs, "armed")
    assert len(armed) == 1
    assert armed[0]["caller"].startswith("nft_do_chain+0x")
    assert armed[0]["callee"] == "kfree_skb_reason"  # the 6.1 drop function
    assert armed[0]["guard"]["verdict"] == "allow"
    hits = of(recs, "hit")
    assert len(hits) == 1
    hit = hits[0]
    assert hit["symbol"] == "nft_do_chain" and int(hit["address"], 16) == int(
        armed[0]["call_addr"], 16)
    assert hit["skb"]["dport"] == PORT and hit["skb"]["daddr"] == "127.0.0.1"
    frames = [f.split("+")[0] for f in hit["kernel_stack"]]
    assert "nf_hook_slow" in frames and "nft_do_chain" in frames
    # gdb has nf_tables' debug file: its own backtrace unwinds through the module, with
    # DWARF lines, into the core netfilter hook
    gdb_frames = [(f["symbol"], f.get("file")) for f in hit["backtrace"]]
    assert ("nft_do_chain", "net/netfilter/nf_tables_core.c") in gdb_frames, gdb_frames
    assert ("nf_hook_slow", "net/netfilter/core.c") in gdb_frames, gdb_frames
    assert "gdb has the debug files of" in err and "nf_tables" in err
    drops = of(recs, "drop")
    assert drops and all(d["file"] == "net/netfilter/nf_tables_core.c" for d in drops)
    cleanup = of(recs, "cleanup")
    assert cleanup and cleanup[-1]["ok"], cleanup
    assert_target_runs_clean(lab)


def test_location_variant(lab: str) -> None:
    rc, recs, err = kdbg_json("--lab", lab, "--location", "nft_do_chain", "--break")
    assert rc == 0, err
    assert of(recs, "armed")[0]["caller"].startswith("nft_do_chain+0x")
    assert len(of(recs, "hit")) == 1


def test_kgdboe_refuses_the_same_drop(lab: str) -> None:
    rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--break",
                              "--transport", "kgdboe", "--count", "2")
    assert rc == 3, err
    refused = of(recs, "refused")
    assert refused, err
    assert refused[0]["verdict"] == "refuse" and refused[0]["transport"] == "kgdboe"
    assert refused[0]["rule"] and refused[0]["evidence"]
    assert of(recs, "armed") == [] and of(recs, "hit") == []
    assert_target_runs_clean(lab)
