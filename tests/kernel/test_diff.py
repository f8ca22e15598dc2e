"""``kdbg report A B`` on two real profiles of known counts: A sends 23 datagrams into a
DROP rule, 17 to a closed port and 5 to another; B sends 7 into the rule, the same 17
and 13 to a third closed port. Recorded (``--write``) and watched (``--json``, which
carries causes) in a throw-away namespace pair; the diff must give exactly the
differences."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kdbg.demo.throwaway import PY, VethLab

KDBG = [sys.executable, "-m", "kdbg"]

SEND = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({a!r}, 40000))
for port, n in {plan!r}:
    for i in range(n):
        s.sendto(b'kdbg', ({b!r}, port))
time.sleep(0.2)
"""

PLAN_A = [(5555, 23), (7777, 17), (6000, 5)]
PLAN_B = [(5555, 7), (7777, 17), (9999, 13)]


def kdbg(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*KDBG, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def profiles(lab: VethLab, out: Path) -> None:
    """a.kdbg, b.kdbg (recordings) and a.jsonl, b.jsonl (watch --json) of each plan."""
    for side, plan in (("a", PLAN_A), ("b", PLAN_B)):
        cmd = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c",
                          SEND.format(a=lab.addr_a, b=lab.addr_b, plan=plan)])
        scope = ["--netns", lab.b.name, "--proto", "udp", "--cmd", cmd]
        kdbg("watch", "--write", str(out / f"{side}.kdbg"), *scope)
        (out / f"{side}.jsonl").write_text(kdbg("watch", "--json", *scope).stdout)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("diff")
    with VethLab(prefix="kdbgc25dif", subnet=127) as lab:
        lab.drop_udp(5555)
        profiles(lab, out)
        return out, lab.addr_b


def diff(*args: str) -> dict[tuple[str, str], dict[str, Any]]:
    recs = [json.loads(x) for x in kdbg("report", *args, "--json").stdout.splitlines()]
    assert recs[-1]["type"] == "summary"
    rows = {}
    for r in recs[:-1]:
        if r["type"] == "diff":
            [(dim, key)] = r["key"].items()
            rows[(dim, key)] = r
    return rows


def counts(rows: dict[tuple[str, str], dict[str, Any]],
           dim: str) -> dict[str, tuple[int, int, str]]:
    return {k: (r["a"], r["b"], r["change"]) for (d, k), r in rows.items() if d == dim}


def test_recordings_differ_exactly(made: tuple[Path, str]) -> None:
    out, b = made
    rows = diff(str(out / "a.kdbg"), str(out / "b.kdbg"))
    assert counts(rows, "reason") == {"NETFILTER_DROP": (23, 7, "changed"),
                                      "NO_SOCKET": (22, 30, "changed")}
    flow = {k.split(" > ")[1]: v for k, v in counts(rows, "flow").items()}
    assert flow == {f"{b}:5555": (23, 7, "changed"), f"{b}:7777": (17, 17, "same"),
                    f"{b}:6000": (5, 0, "gone"), f"{b}:9999": (0, 13, "added")}
    loc = counts(rows, "location")
    assert sorted(v[:2] for v in loc.values()) == [(22, 30), (23, 7)]
    assert any(k.startswith("nft_do_chain+") for k in loc)
    # A recording carries no cause: said so, not guessed.
    assert not counts(rows, "cause")
    text = kdbg("report", str(out / "a.kdbg"), str(out / "b.kdbg")).stdout
    assert "CAUSE: not compared:" in text
    for r in rows.values():  # a recording knows how long it ran: rates on both sides
        assert r["a_rate"] is not None and r["b_rate"] is not None


def test_json_lines_differ_by_cause(made: tuple[Path, str]) -> None:
    out, b = made
    rows = diff(str(out / "a.jsonl"), str(out / "b.jsonl"), "--by", "cause")
    got = counts(rows, "cause")
    rule = [k for k in got if k.startswith("NETFILTER_DROP: table ip filter chain INPUT")]
    assert len(rule) == 1 and got[rule[0]] == (23, 7, "changed")
    assert got[f"NO_SOCKET: no udp socket on {b}:7777"] == (17, 17, "same")
    assert got[f"NO_SOCKET: no udp socket on {b}:6000"] == (5, 0, "gone")
    assert got[f"NO_SOCKET: no udp socket on {b}:9999"] == (0, 13, "added")
    assert len(got) == 4
    # The rows come most changed first.
    order = [k for (d, k) in rows]
    assert order == [rule[0], f"NO_SOCKET: no udp socket on {b}:9999",
                     f"NO_SOCKET: no udp socket on {b}:6000",
                     f"NO_SOCKET: no udp socket on {b}:7777"]

