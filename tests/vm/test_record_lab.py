"""``kdbg watch --lab NAME --write/--pcap``: the guest's kdbg records, the file lands on
the host, and ``kdbg report`` reads it here with the guest kernel's names.

A DROP rule for UDP 5555 in the guest (Debian 6.1 under TCG) and datagrams into it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import KDBG, udp_drops

PORT = 5555
N = 23


@pytest.fixture(scope="module")
def lab(default_lab: str) -> Iterator[str]:
    """The session's default lab (tests/vm/conftest.py), with a DROP rule for UDP to
    PORT and ten datagrams into it a second while this module runs."""
    with udp_drops(default_lab, PORT, every=0.1):
        yield default_lab


def test_lab_recording_lands_on_the_host(lab: str, tmp_path: Path) -> None:
    from kdbg import lab as labmod

    guest = labmod.run(lab, ["uname", "-r"]).stdout.decode().strip()
    out, pcap = tmp_path / "lab.kdbg", tmp_path / "lab.pcapng"
    proc = subprocess.run([*KDBG, "watch", "--lab", lab, "--write", str(out), "--pcap", str(pcap),
                           "--reason", "NETFILTER_DROP", "--dport", str(PORT), "--count", str(N)],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert f"on Linux {guest}, recording to -" in proc.stderr
    assert f"kdbg: {N} drops recorded to {out}" in proc.stderr, proc.stderr
    assert f"{N} packets written to {pcap}" in proc.stderr
    rep = subprocess.run([*KDBG, "report", str(out), "--json"], capture_output=True, text=True,
                         timeout=300, env={})
    recs = [json.loads(x) for x in rep.stdout.splitlines()]
    drops = [r for r in recs if r["type"] == "drop"]
    assert len(drops) == N
    assert {(d["reason"], d["symbol"], d["dport"], d["daddr"]) for d in drops} == {
        ("NETFILTER_DROP", "nft_do_chain", PORT, "127.0.0.1")}
    assert drops[0]["module"] == "nf_tables"  # a module of the guest, named there
    summary = recs[-1]
    assert summary["release"] == guest and summary["complete"] and summary["lost"] == 0
    if shutil.which("tshark"):
        rows = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "udp.dstport",
                               "-e", "frame.comment"], capture_output=True, text=True,
                              timeout=120).stdout.splitlines()
        assert len(rows) == N
        assert all(r.startswith(f"{PORT}\tNETFILTER_DROP at nft_do_chain+0x") for r in rows)
