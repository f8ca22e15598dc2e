"""A storm on record: what the kernel counted instead of sending, its "more" lines, and
the accounting identity (printed + summarized + lost = matched).

tests/data/jsonl/storm.6.18.jsonl is a real ``kdbg watch --json --buffer-pages 1`` of
5,000 datagrams into a DROP rule then 200 to a closed port, on this project's 6.18
kernel: the one-page ring overflowed, so most drops were counted per key in the kernel.
The DROP rule's own counter said 5,000.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable

from kdbg.drops import output
from kdbg.drops.output import Summary
from kdbg.trace.event import DropEvent
from kdbg.trace.more import MoreCounts, Summarized
from tests.conftest import DATA

RULE_COUNTER = 5000  # iptables -nvxL INPUT, around the recorded run
CLOSED_PORT = 200


def recorded() -> list[dict[str, object]]:
    return output.read_jsonl((DATA / "jsonl" / "storm.6.18.jsonl").read_text().splitlines())


def of(recs: Iterable[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [r for r in recs if r["type"] == kind]


def test_every_drop_is_printed_or_counted_and_the_sum_is_the_kernels() -> None:
    recs = recorded()
    [summary] = of(recs, "summary")
    drops, more = of(recs, "drop"), of(recs, "more")
    assert more, "the recording shows no overflow"
    counted = sum(int(m["count"]) for m in more)  # type: ignore[call-overload]
    assert summary["shown"] == len(drops) and summary["summarized"] == counted
    assert summary["lost"] == 0
    assert len(drops) + counted == summary["matched"] == RULE_COUNTER + CLOSED_PORT
    by_reason: dict[object, int] = {}
    for r in drops:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    for m in more:
        by_reason[m["reason"]] = by_reason.get(m["reason"], 0) + int(m["count"])  # type: ignore[call-overload]
    assert by_reason == {"NETFILTER_DROP": RULE_COUNTER, "NO_SOCKET": CLOSED_PORT}


def test_more_records_round_trip_and_name_their_key() -> None:
    for rec in of(recorded(), "more"):
        assert Summarized.from_json(rec).to_json() == rec
        assert rec["by"] == ["reason", "location", "netns", "ifname", "proto", "saddr",
                             "daddr", "sport", "dport"]


def test_more_lines_say_how_many_and_what_they_were_like() -> None:
    nft, sock = (Summarized.from_json(r) for r in of(recorded(), "more"))
    netns = nft.netns
    assert output.more_line(nft) == (
        "    ... and 4,971 more like this: NETFILTER_DROP at nft_do_chain+0x46f, udp "
        f"10.77.48.1:40000 -> 10.77.48.2:5555, netns {netns} veth-b")
    assert output.more_line(sock) == (
        "    ... and 172 more like this: NO_SOCKET at __udp6_lib_rcv+0xe1, udp "
        f"[fd77:48::1]:40000 -> [fd77:48::2]:7777, netns {netns} veth-b")


def test_a_coarse_count_says_it_kept_no_packet() -> None:
    rec = dict(of(recorded(), "more")[0])
    coarse = {k: v for k, v in rec.items() if k not in
              ("proto", "family", "saddr", "daddr", "sport", "dport")}
    coarse["by"] = ["reason", "location", "netns", "ifname"]
    m = Summarized.from_json(coarse)
    assert m.to_json() == coarse
    assert output.more_line(m) == (
        f"    ... and 4,971 more like this: NETFILTER_DROP at nft_do_chain+0x46f, netns "
        f"{m.netns} veth-b (any packet: kdbg's table by packet was full)")


def test_final_line_adds_up() -> None:
    [rec] = of(recorded(), "summary")
    s = Summary(matched=int(rec["matched"]), delivered=int(rec["shown"]),  # type: ignore[call-overload]
                lost=0, seen=None, summarized=int(rec["summarized"]))  # type: ignore[call-overload]
    assert output.summary_line(s) == ("kdbg: 5,200 drops matched: 57 printed + 5,143 "
                                      "summarized, 0 lost")
    assert output.summary_line(Summary(23, 23, 0, 5)) == "kdbg: 23 drops matched, 0 lost"
    cut = Summary(matched=1000, delivered=5, lost=2, seen=None, summarized=900)
    assert output.summary_line(cut) == (
        "kdbg: 1,000 drops matched: 5 printed + 900 summarized, 2 lost, 93 queued when the "
        "watch ended (neither sent nor counted per key: raise --buffer-pages, or use --stats)")


def test_sinks_print_more_on_stdout_and_the_identity_in_json() -> None:
    m = Summarized.from_json(of(recorded(), "more")[0])
    out, err = io.StringIO(), io.StringIO()
    output.TextSink(out, err).more(m)
    assert out.getvalue().startswith("    ... and 4,971 more like this:") and not err.getvalue()
    out = io.StringIO()
    sink = output.JsonSink(out, err)
    sink.more(m)
    sink.summary(Summary(matched=10, delivered=4, lost=0, seen=None, summarized=6))
    more, summ = (json.loads(line) for line in out.getvalue().splitlines())
    assert more["type"] == "more" and more["count"] == 4971
    assert summ == {"type": "summary", "matched": 10, "shown": 4, "summarized": 6, "lost": 0,
                    "seen": None}


def test_counts_are_reported_once_as_they_grow() -> None:
    tables = {"more": [(b"k1", 5)], "more_coarse": []}
    counts = MoreCounts(lambda name: tables[name])
    assert counts.new() == [(b"k1", 5)]
    assert counts.new() == []  # nothing grew
    tables["more"] = [(b"k1", 8), (b"k2", 1)]
    tables["more_coarse"] = [(b"k1", 2)]  # another table's key of the same bytes
    assert counts.new() == [(b"k1", 3), (b"k2", 1), (b"k1", 2)]
    assert counts.total == 11


def test_decoded_drops_of_a_storm_keep_their_causes() -> None:
    drops = [DropEvent.from_json(r) for r in of(recorded(), "drop")]
    nft = [d for d in drops if d.reason == "NETFILTER_DROP"]
    assert nft and all(d.cause is not None and d.cause.rule is not None for d in nft)


def test_diagnose_lists_what_it_could_not_give_a_cause() -> None:
    from kdbg.diagnose.groups import Diagnosis
    from kdbg.diagnose.report import report_json, report_text

    more = [Summarized.from_json(r) for r in of(recorded(), "more")]
    d = Diagnosis([], Summary(5143, 0, 0, None, summarized=5143), 2.0, 0, False, more)
    text = report_text(d).splitlines()
    assert text[0] == ("kdbg: 0 drops, 0 causes, in 2.0 s; 5,143 more counted in the kernel "
                       "while kdbg was behind, causes not evaluated (last)")
    assert text[-2:] == [output.more_line(m) for m in more]
    recs = [json.loads(line) for line in report_json(d)]
    assert [r["type"] for r in recs] == ["more", "more", "summary"]
    assert recs[-1]["summarized"] == sum(r["count"] for r in recs[:-1]) == 5143
