"""Path blocks rendered from checked-in JSON lines of real runs."""

from __future__ import annotations

import io
import json

from kdbg.path.event import PathRecord, from_json
from kdbg.path.report import Assembler, JsonSink, PathSummary, TextSink, render, summary_line
from tests.conftest import DATA


def records(name: str) -> list[PathRecord]:
    out = []
    for line in (DATA / "path" / name).read_text().splitlines():
        rec = from_json(json.loads(line))
        if rec is not None:
            out.append(rec)
    return out


def test_bridge_ping_blocks() -> None:
    text = render(records("bridge_ping.6.18.jsonl"))
    lines = text.splitlines()
    assert lines[0] == ("packet 1 skb 0xffff8881d5197800: "
                        "10.77.5.1 -> 10.77.5.2 icmp echo request id=4242 seq=1")
    assert lines[1] == ("     +0.000ms  4026532177 (blue-a)        veth-a       net_dev_queue"
                        "            10.77.5.1 -> 10.77.5.2 icmp echo request id=4242 seq=1")
    assert [ln.split()[3] for ln in lines[1:7]] == [
        "veth-a", "br-a", "br-a", "br-b", "veth-b", "veth-b"]
    assert lines[7] == ("     +0.100ms  4026532246 (blue-b)        veth-b       "
                        "consumed at icmp_rcv+0x259")
    assert lines[8].startswith("packet 2 skb 0xffff8881d5197200: 10.77.5.2 -> 10.77.5.1 "
                               "icmp echo reply id=4242 seq=1")
    assert lines[-1] == ("     +9.584ms  4026532177 (blue-a)        -            "
                         "consumed at ping_recvmsg+0x9a")
    assert len(lines) == 16


def test_drop_block_ends_with_reason() -> None:
    lines = render(records("veth_drop.6.18.jsonl")).splitlines()
    assert lines[4].endswith("veth-b       dropped NETFILTER_DROP at nft_do_chain+0x3e8")
    assert lines[5].startswith("packet 2 ")  # same skb address, a new packet


def test_open_paths_are_flushed_at_the_end() -> None:
    recs = [r for r in records("veth_drop.6.18.jsonl") if r.packet == 1][:3]
    asm = Assembler()
    assert all(asm.add(r) is None for r in recs)
    (block,) = asm.flush()
    assert block[-1] == "  (still in flight when tracing stopped)" and len(block) == 5


def test_text_sink_prints_a_block_when_its_path_ends() -> None:
    out, err = io.StringIO(), io.StringIO()
    sink = TextSink(out, err)
    recs = records("bridge_ping.6.18.jsonl")
    for rec in recs[:9]:
        sink.record(rec)
    # The request ended at the ninth record, while the reply was on its way.
    assert out.getvalue().count("packet ") == 1
    for rec in recs[9:]:
        sink.record(rec)
    sink.summary(PathSummary(packets=2, ended=2, shown=2, lost=0))
    assert out.getvalue().count("packet ") == 2
    assert err.getvalue() == "kdbg: 2 packets tracked, 2 paths ended, 0 lost\n"


def test_json_sink_streams_records_and_summary() -> None:
    out, err = io.StringIO(), io.StringIO()
    sink = JsonSink(out, err)
    for rec in records("veth_drop.6.18.jsonl"):
        sink.record(rec)
    sink.summary(PathSummary(packets=2, ended=2, shown=2, lost=0))
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert got == [json.loads(line) for line in
                   (DATA / "path" / "veth_drop.6.18.jsonl").read_text().splitlines()]


def test_summary_mentions_losses() -> None:
    assert "ring buffer full" in summary_line(PathSummary(3, 1, 2, lost=5))
    assert "tracking map full" in summary_line(PathSummary(3, 1, 2, lost=0, track_full=4))
