"""The typed Cause: its JSON is the record kdbg has always written, byte for byte, read
back and written again (tests/data/jsonl, docs/diagnose.md), and the drops that carry
it read back unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kdbg import diagnose
from kdbg.drops import drop_json, drop_line
from kdbg.trace.cause import Cause, Listener, RuleRef
from kdbg.trace.event import DropEvent
from tests.conftest import DATA

ROOT = DATA.parents[1]
JSONL = sorted((DATA / "jsonl").glob("*.jsonl"))


def compact(rec: Any) -> str:
    return json.dumps(rec, separators=(",", ":"))


def cause_records() -> list[dict[str, Any]]:
    """Every distinct cause record in tests/data/jsonl: those on captured drops, and
    the shapes the finders write (cause_shapes.jsonl, written by the finders before
    the cause was typed, over canned namespace reads)."""
    seen: dict[str, dict[str, Any]] = {}
    for path in JSONL:
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            cause = rec if "type" not in rec else rec.get("cause")
            if cause is not None:
                seen.setdefault(compact(cause), cause)
    return list(seen.values())


CAUSES = cause_records()


def test_the_records_cover_every_shape() -> None:
    keys = {k for c in CAUSES for k in c}
    assert keys == {"reason", "established", "meaning", "usual_causes", "netns", "netns_name",
                    "hook", "note", "rule", "candidates", "not_evaluated", "socket", "facts",
                    "listeners", "confirm", "advice", "summary"}
    assert {c["established"] for c in CAUSES} == {True, False, None}
    assert any(c.get("hook", 0) is None for c in CAUSES)
    assert any("policy" in c.get("rule", {}) for c in CAUSES)
    assert any("accept_queue" in s for c in CAUSES for s in c.get("listeners", ()))


@pytest.mark.parametrize("rec", CAUSES, ids=lambda c: c["reason"])
def test_a_cause_reads_back_and_writes_the_same_bytes(rec: dict[str, Any]) -> None:
    cause = Cause.from_json(json.loads(compact(rec)))
    assert compact(cause.to_json()) == compact(rec)
    assert Cause.from_json(cause.to_json()) == cause
    assert cause.text == (rec["summary"] or rec["meaning"])


def test_typed_fields() -> None:
    rule = next(c for c in CAUSES if c.get("rule", {}).get("handle") == 8)
    cause = Cause.from_json(rule)
    assert cause.rule == RuleRef("inet", "kdbgt", "checks", 8,
                                 'iifname "veth*" udp dport 6666 counter drop # handle 8')
    assert cause.not_evaluated == ("ct state in established,related",)
    assert cause.group == "NETFILTER_DROP 4026532247 inet kdbgt checks handle 8"
    policy = Cause.from_json(next(c for c in CAUSES if "policy" in c.get("rule", {})))
    assert policy.rule is not None and policy.rule.policy == "drop"
    assert policy.group.endswith(" ip pol in policy")
    queue = Cause.from_json(next(c for c in CAUSES if c["reason"] == "SOCKET_RCVBUFF"
                                 and c.get("netns_name") == "blue-b" and "8000" in c["summary"]))
    assert queue.listeners == (Listener("udp", "ipv4", "10.77.9.2", 8000, "udp 10.77.9.2:8000",
                                        2304, False, 22),)
    assert dict(queue.facts or ())["net.core.rmem_max"] == "4194304"
    csum = Cause.from_json(next(c for c in CAUSES if c["reason"] == "UDP_CSUM"))
    assert csum.group == f"UDP_CSUM {csum.summary}" and csum.rule is None


@pytest.mark.parametrize("path", [p for p in JSONL if p.name != "cause_shapes.jsonl"],
                         ids=lambda p: p.name)
def test_captured_drops_read_back_to_the_same_line(path: Path) -> None:
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "drop":
            ev = DropEvent.from_json(rec)
            assert drop_json(ev) == line
            if ev.cause is not None:
                assert drop_line(ev).endswith(f"  cause: {rec['cause']['summary']}")


def documented_diagnosis() -> dict[str, Any]:
    text = (ROOT / "docs" / "diagnose.md").read_text()
    block = re.search(r"```json\n(\{\n  \"type\": \"diagnosis\".*?\n\})\n```", text, re.S)
    assert block is not None
    rec: dict[str, Any] = json.loads(block.group(1))
    return rec


def test_the_documented_diagnosis_record_comes_back_from_its_cause() -> None:
    doc = documented_diagnosis()
    order = ("reason", "established", "meaning", "usual_causes", "netns", "netns_name",
             "hook", "rule", "confirm", "advice")
    cause = Cause.from_json({**{k: doc[k] for k in order}, "summary": doc["cause"]})
    ex = doc["example"]
    symbol, offset = ex["location"].split("+")
    event = DropEvent.from_json({
        **ex, "type": "drop", "cpu": 0, "reason": doc["reason"], "reason_code": 12,
        "address": "0x0", "symbol": symbol, "offset": int(offset, 16), "module": None})
    group = diagnose.Group(cause.group, cause, event, doc["count"], doc["first_seen_ns"],
                           doc["last_seen_ns"])
    assert compact(diagnose.diagnosis_json(group)) == compact(doc)
