"""kdbg watch --bpf in a flood, without a kernel: the verdicts the program counted per
key while the ring was full, as "... and N more like this" lines and {"type": "more"}
records naming the program; the end line's identity; the paced reader's rest.

The program is tests/data/bpfprog/xdp_drop_port.host.json (see test_bpflines.py); the
keys are laid out as bpf/bpf_verdict.bpf.c's ring_full() fills struct kdbg_more_key.
"""

from __future__ import annotations

import ctypes as ct
import io
import json
import socket
import time

import pytest

from kdbg.drops import output
from kdbg.drops.bpfdecode import Verdicts
from kdbg.drops.output import Summary
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import bpfverdict
from kdbg.trace import filters as flt
from kdbg.trace.bpfprogs import ProgFacts
from kdbg.trace.layout import RawMoreKey
from kdbg.trace.more import MoreCounts, Summarized
from kdbg.trace.pacing import PacedReader
from tests.conftest import DATA
from tests.unit.test_program import golden

RECORD = DATA / "bpfprog" / "xdp_drop_port.host.json"
DROP_IF = "if (udp->dest == htons(DROP_PORT))"
XDP_DRIVER = 16  # the record's chain bit for a program on the driver's XDP hook


@pytest.fixture(scope="module")
def prog() -> ProgFacts:
    return ProgFacts.from_record(json.loads(RECORD.read_text()))


def key(prog: ProgFacts, *, coarse: bool = False) -> bytes:
    k = RawMoreKey()
    k.location, k.reason, k.netns, k.ifindex, k.chain = prog.address, 1, 4026532281, 2, XDP_DRIVER
    k.ifname = b"bpfi77"
    if coarse:
        k.coarse = 1
    else:
        k.family, k.l4proto, k.l4_valid, k.sport, k.dport = 4, 17, 1, 40000, 7777
        ct.memmove(k.saddr, socket.inet_aton("10.98.0.1"), 4)
        ct.memmove(k.daddr, socket.inet_aton("10.98.0.2"), 4)
    return bytes(k)


def test_a_count_names_the_program_its_verdict_line_and_the_flow(prog: ProgFacts) -> None:
    m = Verdicts(lambda entry: prog if entry == prog.address else None, 0).more(key(prog), 4971)
    assert (m.count, m.reason, m.reason_code, m.dport, str(m.saddr)) == (
        4971, "XDP_DROP", 1, 7777, "10.98.0.1")
    assert m.prog is not None and (m.prog.id, m.prog.attach) == (prog.id, "xdp/driver")
    assert output.more_line(m) == (
        f"    ... and 4,971 more like this: XDP_DROP at bpf_prog_{prog.tag}_kdbg_test_xdp+0x0, "
        "udp 10.98.0.1:40000 -> 10.98.0.2:7777, netns 4026532281 bpfi77"
        f"  prog {prog.id} kdbg_test_xdp: {DROP_IF}")
    rec = json.loads(output.more_json(m))
    assert rec["type"] == "more" and rec["count"] == 4971 and rec["dport"] == 7777
    assert rec["by"] == ["reason", "location", "netns", "ifname", "proto", "saddr", "daddr",
                         "sport", "dport"]
    assert rec["prog"]["id"] == prog.id and rec["prog"]["attach"] == "xdp/driver"
    assert [ln["text"] for ln in rec["prog"]["verdict_lines"]] == [DROP_IF]
    assert Summarized.from_json(rec).to_json() == rec  # the program trimmed to its name


def test_a_coarse_count_says_any_packet_and_an_unknown_entry_its_address(
        prog: ProgFacts) -> None:
    verdicts = Verdicts(lambda entry: prog if entry == prog.address else None, 0)
    line = output.more_line(verdicts.more(key(prog, coarse=True), 3))
    assert line.endswith(f"(any packet: kdbg's table by packet was full)  prog {prog.id} "
                         f"kdbg_test_xdp: {DROP_IF}")
    gone = Verdicts(lambda entry: None, 0).more(key(prog), 2)
    assert gone.prog is None and "prog" not in gone.to_json()
    assert output.more_line(gone).startswith(
        f"    ... and 2 more like this: XDP_DROP at 0x{prog.address:x} [?], udp")


def test_each_program_verdict_and_side_is_worked_out_once(prog: ProgFacts) -> None:
    verdicts = Verdicts(lambda entry: prog, 0)
    a = verdicts.prog(prog, 1, XDP_DRIVER)
    assert verdicts.prog(prog, 1, XDP_DRIVER) is a
    assert verdicts.prog(prog, 1, 8).attach == "xdp/generic"
    assert verdicts.prog(prog, 0, bpfverdict.VIA_EXCEPTION).lines == ()  # untraced: no line


def test_printed_plus_summarized_is_matched_on_the_end_line(prog: ProgFacts) -> None:
    tables = {"more": [(key(prog), 4000)], "more_coarse": [(key(prog, coarse=True), 5)]}
    counts = MoreCounts(lambda t: tables[t])
    verdicts = Verdicts(lambda entry: prog, 0)
    shown = [verdicts.more(k, n) for k, n in counts.new()]
    tables["more"] = [(key(prog), 4100)]
    shown += [verdicts.more(k, n) for k, n in counts.new()]
    assert [m.count for m in shown] == [4000, 5, 100] and counts.total == 4105
    summary = Summary(matched=5000, delivered=895, lost=0, seen=5000, summarized=counts.total)
    assert output.summary_line(summary) == (
        "kdbg: 5,000 drops matched: 895 printed + 4,105 summarized, 0 lost")
    out = io.StringIO()
    sink = output.JsonSink(out, io.StringIO())
    for m in shown:
        sink.more(m)
    sink.summary(summary)
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    end = recs[-1]
    assert end["shown"] + sum(r["count"] for r in recs[:-1]) == end["matched"]


def test_the_program_text_counts_per_key_only_when_streaming() -> None:
    spec = flt.PacketFilters().resolve(ReasonTable({}, "BPF verdicts"))
    fields = dict.fromkeys(bpfverdict.FIELDS, 8) | {
        "DEV_XDP_STATE": -1, "XDP_ENTITY_SIZE": 0, "SKB_INGRESS_BIT": -1}
    streaming = bpfverdict.build(fields, spec, more_entries=512)
    assert "BPF_PERCPU_HASH(more, struct kdbg_more_key, __u64, 512);" in streaming
    assert "ring_full(&key);" in streaming
    counting = bpfverdict.build(fields, spec, stats=True)
    assert "#define KDBG_STATS       1" in counting


class Backlog:
    """A ring that always holds more than the reader takes, each record costing CPU."""

    def __init__(self, cost_s: float) -> None:
        self.cost, self.read = cost_s, 0

    def ring_backlog(self) -> int:
        return 1

    def poll(self, timeout_ms: int, limit: int | None = None) -> None:
        self.consume(limit)

    def consume(self, limit: int | None = None) -> int:
        end = time.thread_time() + self.cost * (limit or 1)
        while time.thread_time() < end:
            pass
        self.read += limit or 1
        return limit or 1


def test_a_reader_that_is_behind_rests_to_keep_to_its_share() -> None:
    ring = Backlog(cost_s=0.0001)
    reader = PacedReader(ring, share=0.2)  # type: ignore[arg-type]
    t0, cpu0 = time.monotonic(), time.thread_time()
    while time.monotonic() - t0 < 1.0:
        reader.turn()
    wall, cpu = time.monotonic() - t0, time.thread_time() - cpu0
    assert ring.read > 0 and reader.rested > 0.5
    assert cpu / wall < 0.3, (cpu, wall)


# bpfverdict.kernel_fields() on this project's 6.18 host kernel
FIELDS_6_18 = {"DEV_IFINDEX": 224, "DEV_NAME": 280, "DEV_NET": 264, "NET_INUM": 176,
               "PROG_BPF_FUNC": 72, "RXQ_DEV": 0, "SKB_DATA": 200, "SKB_DATA_LEN": 116,
               "SKB_DEV": 16, "SKB_LEN": 112, "XDP_DATA": 0, "XDP_DATA_END": 8,
               "XDP_RXQ": 32, "DEV_XDP_STATE": 2248, "SKB_INGRESS_BIT": 1034,
               "XDP_ENTITY_SIZE": 16}


def test_golden_verdict_program_streaming_6_18() -> None:
    spec = flt.PacketFilters(dports=(7777,), ifname="bpfi1").resolve(
        ReasonTable({}, "BPF verdicts"))
    text = bpfverdict.build(FIELDS_6_18, spec)
    assert "{{" not in text
    golden("bpf_verdict.6.18.streaming.c", text)
