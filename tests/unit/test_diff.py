"""``kdbg report A B`` on profiles recorded on Linux 6.18 by tests/kernel/test_diff.py's
scene (tests/data/diff): A sent 23 datagrams into a DROP rule on port 5555, 17 to the
closed port 7777 and 5 to the closed port 6000; B sent 7, 17 and 13 to the closed
port 9999. ``*.kdbg`` are ``kdbg watch --write`` recordings, ``*.jsonl`` the same
plans under ``kdbg watch --json`` (which carries causes)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kdbg.cli import main
from kdbg.record.diff import Profile, compare, diff, diff_json, diff_text
from kdbg.trace import filters as flt

DATA = Path(__file__).resolve().parents[1] / "data" / "diff"
A, B = str(DATA / "a.kdbg"), str(DATA / "b.kdbg")
JA, JB = str(DATA / "a.jsonl"), str(DATA / "b.jsonl")
DST = "10.77.127.2"


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def rows(*args: str) -> list[dict[str, Any]]:
    res = cli("report", *args, "--json")
    assert res.exit_code == 0, res.output
    return [json.loads(x) for x in res.output.splitlines()]


def by(recs: list[dict[str, Any]], dim: str) -> dict[str, tuple[int, int, str]]:
    return {r["key"][dim]: (r["a"], r["b"], r["change"]) for r in recs
            if r["type"] == "diff" and dim in r["key"]}


def test_two_recordings_per_reason_location_and_flow() -> None:
    recs = rows(A, B)
    assert by(recs, "reason") == {"NETFILTER_DROP": (23, 7, "changed"),
                                  "NO_SOCKET": (22, 30, "changed")}
    assert by(recs, "location") == {"nft_do_chain+0x46f": (23, 7, "changed"),
                                    "__udp4_lib_rcv+0x4bc": (22, 30, "changed")}
    flow = {k.split(" > ")[1]: v for k, v in by(recs, "flow").items()}
    assert flow == {f"{DST}:5555": (23, 7, "changed"), f"{DST}:9999": (0, 13, "added"),
                    f"{DST}:6000": (5, 0, "gone"), f"{DST}:7777": (17, 17, "same")}
    assert [r["key"] for r in recs if r["type"] == "diff"][4:] == [
        {"flow": f"udp 10.77.127.1:40000 > {DST}:{p}"} for p in (5555, 9999, 6000, 7777)]
    assert recs[-2] == {"type": "not_compared", "by": "cause",
                        "why": f"{A} and {B} carry no causes (a recording never does: "
                               "compare kdbg watch --json files)"}
    summary = recs[-1]
    assert summary["a"]["drops"] == 45 and summary["b"]["drops"] == 37
    for r in recs[:-2]:  # rates from each recording's own duration
        assert r["a_rate"] == round(r["a"] / summary["a"]["seconds"], 3)
        assert r["b_rate"] == round(r["b"] / summary["b"]["seconds"], 3)


def test_every_record_has_the_documented_shape() -> None:
    for r in rows(A, B, "--by", "reason")[:-1]:
        assert set(r) == {"type", "key", "a", "b", "change", "a_rate", "b_rate"}
        assert r["type"] == "diff" and len(r["key"]) == 1


def test_json_lines_compare_by_cause() -> None:
    got = by(rows(JA, JB, "--by", "cause", "--by", "reason"), "cause")
    assert got == {
        "NETFILTER_DROP: table ip filter chain INPUT rule handle 2: "
        "udp dport 5555 counter drop # handle 2": (23, 7, "changed"),
        f"NO_SOCKET: no udp socket on {DST}:9999": (0, 13, "added"),
        f"NO_SOCKET: no udp socket on {DST}:6000": (5, 0, "gone"),
        f"NO_SOCKET: no udp socket on {DST}:7777": (17, 17, "same")}


def test_a_recording_against_json_lines_says_which_lacks_causes() -> None:
    d = compare(A, JB, flt.PacketFilters())
    assert d.skipped == (("cause", f"{A} carries no causes (a recording never does: "
                                   "compare kdbg watch --json files)"),)
    assert d.a.seconds is not None and d.b.seconds is None  # json lines: no rate
    assert all(r.b_rate is None for r in d.rows)


def test_filters_apply_to_both_sides() -> None:
    recs = rows(A, B, "--dport", "5555")
    assert by(recs, "reason") == {"NETFILTER_DROP": (23, 7, "changed")}
    assert by(rows(A, B, "--reason", "NO_SOCKET", "--by", "reason"), "reason") == {
        "NO_SOCKET": (22, 30, "changed")}


def test_text_most_changed_first_and_unchanged_counted() -> None:
    res = cli("report", A, B, "--by", "flow", "--top", "2")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith(f"A = {A}: 45 drops in ")
    assert lines[3].split() == ["CHANGE", "A", "B", "B-A", "A/S", "B/S", "FLOW"]
    assert lines[4].split()[:4] == ["changed", "23", "7", "-16"]
    assert lines[5].split()[:4] == ["added", "0", "13", "+13"]
    assert lines[6] == "(1 more changed, 1 unchanged)"


def test_ties_and_order_on_made_profiles() -> None:
    a = Profile("a", "json lines", None, 10, 10.0, counts={"reason": Counter(X=5, Y=5)})
    b = Profile("b", "json lines", None, 10, 5.0, counts={"reason": Counter(X=5, Z=5)})
    d = diff(a, b, ("reason",))
    # Y and Z both moved by 5 drops; Z's rate moved more (B ran half as long).
    assert [(r.key, r.change) for r in d.rows] == [("Z", "added"), ("Y", "gone"),
                                                    ("X", "same")]
    assert [json.loads(x)["b_rate"] for x in diff_json(d)[:3]] == [1.0, 0.0, 1.0]
    assert "(1 unchanged)" in diff_text(d)


@pytest.mark.parametrize("args, message", [
    ([A, B, A], "kdbg report takes one file, or two to compare (3 given)"),
    ([A, "--by", "reason"], "--by compares two files: give FILE and FILE_B"),
    ([A, B, "--by", "port"], "cannot compare by 'port'"),
    ([A, B, "--stats"], "comparing two files: no --stats, --group-by or --pcap"),
    ([A, str(DATA.parent / "kfree_skb.format.6.18")], "is neither a kdbg recording nor "
                                                       "kdbg watch --json lines"),
    ([A, "/nonexistent.kdbg"], "cannot read /nonexistent.kdbg"),
])
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    res = cli("report", *args)
    assert res.exit_code != 0
    assert message in res.output and len(res.output.strip().splitlines()) == 1
