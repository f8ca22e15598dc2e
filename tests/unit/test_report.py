"""Formatting, stats and JSON on checked-in JSON lines (captured from real runs)."""

from __future__ import annotations

import io
import json

from kdbg.drops import output as report
from kdbg.trace.event import DropEvent
from tests.conftest import DATA

SCHEMA = {"type", "time_ns", "cpu", "pid", "tid", "comm", "reason", "reason_code", "location",
          "address", "symbol", "offset", "module", "skb", "proto", "family", "saddr", "daddr",
          "sport", "dport", "netns", "ifname", "ifindex", "len"}


def captured() -> list[DropEvent]:
    recs = report.read_jsonl((DATA / "jsonl" / "netfilter_drop.6.18.jsonl").read_text()
                             .splitlines())
    return [DropEvent.from_json(r) for r in recs if r["type"] == "drop"]


def test_captured_records_follow_the_schema() -> None:
    for line in (DATA / "jsonl" / "netfilter_drop.6.18.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "drop":
            assert rec.keys() >= SCHEMA
            assert DropEvent.from_json(rec).to_json() == rec


def test_text_lines_align_under_the_header() -> None:
    events = captured()
    assert len(events) == 23
    head = report.header()
    lines = [report.drop_line(e) for e in events]
    for col in ("REASON", "LOCATION", "PROTO", "SOURCE", "DESTINATION", "NETNS"):
        starts = {line[head.index(col) - 1] for line in lines}
        assert starts == {" "}, col  # every cell starts after a separator
    assert lines[0][head.index("LOCATION"):].startswith("nft_do_chain+0x")
    assert "10.77.9.1:40000" in lines[0] and "10.77.9.2:5555" in lines[0]


def test_source_line_goes_last_and_keeps_the_columns() -> None:
    import dataclasses

    plain = captured()[0]
    with_line = dataclasses.replace(plain, file="net/netfilter/nf_tables_core.c", line=287)
    a, b = report.drop_line(plain), report.drop_line(with_line)
    assert b == a + "  (net/netfilter/nf_tables_core.c:287)"
    rec = json.loads(report.drop_json(with_line))
    assert (rec["file"], rec["line"]) == ("net/netfilter/nf_tables_core.c", 287)
    assert "file" not in json.loads(report.drop_json(plain))


def test_stats_rows_sort_and_total() -> None:
    counts = {(12, 0xFFFFFFFF81A003E8): 23, (3, 0xFFFFFFFF81B00010): 5}
    rows = report.stats_rows(counts, {12: "NETFILTER_DROP", 3: "NO_SOCKET"}.__getitem__,
                             lambda a: f"0x{a:x}")
    assert [r.count for r in rows] == [23, 5]
    summary = report.Summary(matched=28, delivered=0, lost=0, seen=30)
    table = report.stats_table(rows, summary)
    assert table.splitlines()[-1].split() == ["28", "total"]
    rec = json.loads(report.stats_json(rows, summary, final=True))
    assert rec["type"] == "stats" and rec["counts"][0]["count"] == 23


def test_sinks_route_stdout_and_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    sink = report.JsonSink(out, err)
    sink.watching("kdbg: watching skb:kfree_skb")
    for ev in captured()[:2]:
        sink.drop(ev)
    sink.summary(report.Summary(matched=2, delivered=2, lost=0, seen=2))
    assert err.getvalue().startswith("kdbg: watching")
    types = [json.loads(line)["type"] for line in out.getvalue().splitlines()]
    assert types == ["drop", "drop", "summary"]
    out, err = io.StringIO(), io.StringIO()
    text = report.TextSink(out, err)
    text.drop(captured()[0])
    text.summary(report.Summary(matched=1, delivered=1, lost=3, seen=1))
    assert out.getvalue().startswith("TIME")
    assert "3 lost (neither sent nor counted per key" in err.getvalue()
