"""A journey: bpf/kdbg_journey.h and its mirror, the fragment's C text, and the assembly
of journeys from hop records recorded on a real kernel (tests/kernel/test_journey.py
writes tests/data/journey/veth_bridge.6.18.json: three datagrams through a veth pair and
a bridge into a DROP rule, and three that a two-slot table could not follow), complete
and incomplete; their JSON and their text."""

from __future__ import annotations

import ctypes as ct
import dataclasses
import json
import os
import re
from typing import Any

import pytest

from kdbg.dirs import BPF_DIR
from kdbg.trace import filters as flt
from kdbg.trace import journeylayout as jl
from kdbg.trace import journeyprog
from kdbg.trace.hops import HOP_TRACEPOINTS, RawHopSeen
from kdbg.trace.journey import (
    DROP,
    LAST_HOP,
    RING_FULL,
    Journey,
    JourneyTable,
    assemble,
    from_record,
    from_slot,
)
from kdbg.trace.journeytext import journey_lines
from kdbg.trace.layout import RawDropEvent
from tests.conftest import DATA
from tests.unit.cheaders import header_fields, mirror

HEADER = (BPF_DIR / "kdbg_journey.h").read_text()
RECORDING = json.loads((DATA / "journey" / "veth_bridge.6.18.json").read_text())
# the recording's two namespaces, by inode
A, B = (int(k) for k, _v in sorted(RECORDING["complete"]["netns_names"].items(),
                                   key=lambda kv: kv[1]))


def recorded(key: str) -> tuple[list[jl.RawJourneyDrop], dict[str, Any]]:
    rec = RECORDING[key]
    return [jl.RawJourneyDrop.from_buffer_copy(bytes.fromhex(h)) for h in rec["records"]], rec


def names(rec: dict[str, Any]) -> Any:
    table = {int(k): v for k, v in rec["netns_names"].items()}
    return lambda inode: table.get(inode) if inode is not None else None


def journey_of(raw: jl.RawJourneyDrop, rec: dict[str, Any]) -> Journey:
    return from_record(raw, rec["wall_offset_ns"], rec["attached_ns"], names(rec))


# -- the layout ---------------------------------------------------------------------


def test_layout_matches_header() -> None:
    assert header_fields("kdbg_journey.h", "kdbg_journey_hop", {
        "struct kdbg_hop_seen": RawHopSeen}) == mirror(jl.RawJourneyHop)
    assert header_fields("kdbg_journey.h", "kdbg_journey", {
        "struct kdbg_journey_hop": jl.RawJourneyHop}) == mirror(jl.RawJourney)
    assert header_fields("kdbg_journey.h", "kdbg_journey_drop", {
        "struct kdbg_drop_event": RawDropEvent,
        "struct kdbg_journey": jl.RawJourney}) == mirror(jl.RawJourneyDrop)
    assert (ct.sizeof(jl.RawJourneyHop), jl.SLOT_SIZE) == (112, 1840)
    assert jl.SLOT_SIZE % 8 == 0  # a BPF array's element: no padding between slots


def test_constants_match_header() -> None:
    consts = dict(re.findall(r"#define (KDBG_JOURNEY_\w+) (0x[0-9A-F]+|\d+)", HEADER))
    assert int(consts["KDBG_JOURNEY_HOPS"]) == jl.HOPS
    assert int(consts["KDBG_JOURNEY_HASH"], 16) == jl.HASH
    assert int(consts["KDBG_JOURNEY_BUSY"]) == jl.BUSY
    assert (int(consts["KDBG_JOURNEY_CTR_FOLLOWED"]), int(consts["KDBG_JOURNEY_CTR_BUSY"]),
            int(consts["KDBG_JOURNEY_NR_CTRS"])) == (jl.CTR_FOLLOWED, jl.CTR_BUSY, jl.NR_CTRS)
    assert jl.HOPS & (jl.HOPS - 1) == 0


def test_slot_of_is_the_kernels_hash() -> None:
    for key in ("complete", "table_full"):
        raws, _rec = recorded(key)
        for raw in raws:
            assert raw.slot == jl.slot_of(raw.ev.skbaddr, raw.slots)
    assert jl.slot_of(0xFFFF8881E60A7E00, 2) in (0, 1)
    assert jl.slot_of(0, 1024) == 0


# -- the fragment's C ------------------------------------------------------------------

OFFSETS = {"SKB_DATA": 200, "SKB_PROTOCOL": 176, "DEV_LINK_OPS": 2088, "LINK_OPS_KIND": 40}


def test_golden_fragment() -> None:
    spec = flt.FilterSpec(proto="udp", dports=(5593,), netns=4026532372)
    text = journeyprog.build(spec, OFFSETS, HOP_TRACEPOINTS)
    assert "netns" not in text.split("/* filters on the packet */")[1].split("return 1;")[0]
    path = DATA / "golden" / "journey.6.18.c"
    if os.environ.get("KDBG_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), "journey.6.18.c changed; KDBG_UPDATE_GOLDEN=1 to accept"


def test_fragment_hooks_and_attachments() -> None:
    hops = HOP_TRACEPOINTS[:2]
    text = journeyprog.build(flt.FilterSpec(), OFFSETS, hops,
                             journeyprog.JourneyOptions(slot_bits=3, idle_ns=5))
    assert "KDBG_JOURNEY_HOP(net_dev_queue, 1, 0)\nKDBG_JOURNEY_HOP(netif_rx, 2, 1)\n" in text
    assert "#define JOURNEY_SLOT_BITS 3" in text and "#define JOURNEY_IDLE_NS  5ULL" in text
    # the ends first: no journey can begin whose end would not be seen
    assert journeyprog.attachments(hops) == [
        ("btf:consume_skb", "kdbg_journey_consume_skb"),
        ("btf:net_dev_queue", "kdbg_journey_net_dev_queue"),
        ("btf:netif_rx", "kdbg_journey_netif_rx")]
    with pytest.raises(ValueError):
        journeyprog.build(flt.FilterSpec(), OFFSETS, hops, journeyprog.JourneyOptions(0))


# -- assembly -----------------------------------------------------------------------


def test_recorded_journeys_are_complete_and_in_order() -> None:
    raws, rec = recorded("complete")
    for raw, event in zip(raws, rec["events"], strict=True):
        j = journey_of(raw, rec)
        assert j.complete and j.reference == DROP
        assert [(h.point, h.netns, h.netns_name, h.ifname, h.kind) for h in j.hops] == [
            ("net:net_dev_queue", A, "kdbgjourney-a", "veth-a", "veth"),
            ("net:netif_rx", B, "kdbgjourney-b", "veth-b", "veth"),
            ("net:netif_receive_skb", B, "kdbgjourney-b", "veth-b", "veth"),
            ("net:netif_receive_skb_entry", B, "kdbgjourney-b", "br0", "bridge"),
            ("net:netif_receive_skb", B, "kdbgjourney-b", "br0", "bridge")]
        befores = [h.before_ns for h in j.hops]
        assert befores == sorted(befores, reverse=True) and befores[-1] > 0
        assert befores[0] == raw.ev.time_ns - raw.journey.hops[0].time_ns
        assert j.hops[0].time_ns == raw.journey.hops[0].time_ns + rec["wall_offset_ns"]
        assert j.hops[0].headers.summary() == "10.77.93.1:40000 -> 10.77.93.2:5593 udp"
        # what the watch printed is what the recording assembles to
        assert j.to_json() == {k: event[k] for k in ("journey", "journey_table")}


def test_recorded_journeys_not_followed_for_a_full_table() -> None:
    raws, rec = recorded("table_full")
    for raw in raws:
        assert raw.journey.skbaddr != raw.ev.skbaddr
        assert raw.journey.refused_skb == raw.ev.skbaddr
        j = journey_of(raw, rec)
        assert j.hops == ()
        assert j.notes == ("not followed: its slot in the journey table of 2 was following "
                           "another packet (table full)",)
        assert j.to_json()["journey"] == []


def _complete() -> tuple[jl.RawJourneyDrop, dict[str, Any]]:
    raws, rec = recorded("complete")
    return jl.RawJourneyDrop.from_buffer_copy(bytes(raws[0])), rec


def test_a_journey_longer_than_a_slot_keeps_its_last_hops() -> None:
    raw, rec = _complete()
    five = [jl.RawJourneyHop.from_buffer_copy(bytes(h)) for h in raw.journey.hops[:5]]
    for i in range(21):  # the same five hops, four times and one more: 21 hops
        hop = jl.RawJourneyHop.from_buffer_copy(bytes(five[i % 5]))
        hop.time_ns = five[0].time_ns + i
        raw.journey.hops[i % jl.HOPS] = hop
    raw.journey.nhops = 21
    raw.ev.time_ns = five[0].time_ns + 100
    j = journey_of(raw, rec)
    assert len(j.hops) == jl.HOPS
    assert [h.before_ns for h in j.hops] == [100 - i for i in range(5, 21)]
    assert j.notes == ("its first 5 hops were not kept (a slot keeps the last 16)",)


def test_the_hops_a_record_does_not_carry_are_not_read() -> None:
    """A drop's record carries its slot up to its last kept hop: the ring buffer's bytes
    after it are whatever an earlier record left there."""
    raw, rec = _complete()
    assert raw.journey.nhops == 5
    before = journey_of(raw, rec).to_json()
    for i in range(5, jl.HOPS):
        ct.memset(ct.addressof(raw.journey.hops[i]), 0xA5, ct.sizeof(jl.RawJourneyHop))
    assert journey_of(raw, rec).to_json() == before


def test_a_journey_first_seen_mid_way() -> None:
    raw, rec = _complete()
    hops = [jl.RawJourneyHop.from_buffer_copy(bytes(h)) for h in raw.journey.hops[2:5]]
    for i, hop in enumerate(hops):
        raw.journey.hops[i] = hop
    raw.journey.nhops = 3
    j = journey_of(raw, rec)
    assert [h.ifname for h in j.hops] == ["veth-b", "br0", "br0"]
    assert j.notes == ("its first hop seen (net:netif_receive_skb on veth-b) is not where a "
                       "packet enters: the hops before it were not seen (it entered before "
                       "the tracer, or matched the filters only there)",)


def test_a_journey_that_began_as_the_tracer_attached() -> None:
    raw, rec = _complete()
    first = raw.journey.hops[0].time_ns
    j = from_record(raw, rec["wall_offset_ns"], first - 2_500_000, names(rec))
    assert j.notes == ("it may have entered before the tracer: its first hop came 2.500 ms "
                       "after the tracer attached",)
    assert from_record(raw, 0, first - 20_000_000).complete
    # a hop before the attach ended (hop programs attach one by one): said so, not "0 ms"
    j = from_record(raw, rec["wall_offset_ns"], first + 1_500_000, names(rec))
    assert j.notes == ("it may have entered before the tracer: its first hop came 1.500 ms "
                       "before the tracer had attached all its programs",)


def test_no_hop_seen() -> None:
    raw, rec = _complete()
    raw.journey.skbaddr = 0
    j = journey_of(raw, rec)
    assert j.hops == () and j.notes == (
        "no hop seen: the packet entered before the tracer, or was made and dropped before "
        "it reached an interface",)


def test_no_hop_seen_of_a_drop_as_the_tracer_attached() -> None:
    """A datagram whose hops all came before the hop programs attached, dropped just
    after: said to be in flight at the attach, not made and dropped on the spot."""
    raw, rec = _complete()
    raw.journey.skbaddr = 0
    j = from_record(raw, rec["wall_offset_ns"], raw.ev.time_ns - 1_250_000, names(rec))
    assert j.hops == () and j.notes == (
        "it may have entered before the tracer: no hop seen, and it was dropped 1.250 ms "
        "after the tracer attached",)
    assert from_record(raw, 0, raw.ev.time_ns - 20_000_000).notes[0].startswith(
        "no hop seen")
    assert from_record(raw, 0, raw.ev.time_ns + 3_000_000).notes == (
        "it may have entered before the tracer: no hop seen, and it was dropped 3.000 ms "
        "before the tracer had attached all its programs",)


def test_the_ended_journey_of_an_earlier_packet_is_not_this_ones() -> None:
    """skb memory is reused at once: the slot may still hold the journey of the packet
    that had this skb before, ended by its drop; the drop program says whether it ended
    this packet's own."""
    raw, rec = _complete()
    raw.followed = 0
    j = journey_of(raw, rec)
    assert j.hops == () and j.notes[0].startswith("no hop seen")
    raw.ring_full_ns = raw.ev.time_ns - 1000
    assert journey_of(raw, rec).notes == (RING_FULL,)
    table = JourneyTable(raw.table, raw.slots)
    raw.journey.ended = 1  # at a stop: a slot its skb's earlier packet ended
    assert from_slot(bytes(raw.journey), raw.ev.skbaddr, table).hops == ()
    raw.journey.ended = 0
    assert len(from_slot(bytes(raw.journey), raw.ev.skbaddr, table).hops) == 5


def test_at_a_stop_times_count_back_from_the_last_hop() -> None:
    raw, rec = _complete()
    assert raw.journey.ended == 1  # the drop's first line ended it before the copy
    raw.journey.ended = 0  # as it was at the call to the drop function
    table = JourneyTable(raw.table, raw.slots, jl.SLOT_SIZE, rec["wall_offset_ns"],
                         rec["attached_ns"])
    j = from_slot(bytes(raw.journey), raw.ev.skbaddr, table, names(rec))
    assert j.reference == LAST_HOP and j.complete
    assert j.hops[-1].before_ns == 0 and j.hops[0].before_ns > 0
    assert "before_last_hop_ns" in j.to_json()["journey"][0]
    assert journey_lines(j)[0] == "journey (5 hops, oldest first; time before its last hop):"
    with pytest.raises(ValueError):
        from_slot(bytes(raw.journey)[:100], raw.ev.skbaddr, table)
    assert assemble(raw.journey, raw.ev.skbaddr, None).hops == tuple(
        dataclasses.replace(h, netns_name=None, time_ns=h.time_ns - rec["wall_offset_ns"])
        for h in j.hops)


def test_table_addresses() -> None:
    raw, _rec = _complete()
    table = JourneyTable(raw.table, raw.slots)
    assert table.slot_address(raw.ev.skbaddr) == raw.table + raw.slot * 1840
    assert JourneyTable.from_json(table.to_json()) == table


# -- JSON and text ------------------------------------------------------------------


def test_json_round_trip() -> None:
    for key in ("complete", "table_full"):
        raws, rec = recorded(key)
        for raw in raws:
            j = journey_of(raw, rec)
            assert Journey.from_json(j.to_json()) == j
    assert Journey.from_json({"type": "drop"}) is None


def test_text_of_a_recorded_journey() -> None:
    raws, rec = recorded("complete")
    raw = raws[0]
    j = journey_of(raw, rec)
    ms = [f"-{h.before_ns / 1e6:.3f}ms" for h in j.hops]
    a, b = f"{A} (kdbgjourney-a)", f"{B} (kdbgjourney-b)"
    assert journey_lines(j) == [
        "journey (5 hops, oldest first; time before the drop):",
        f"  {ms[0]:>11}  {a:<26} veth-a       veth    net_dev_queue"
        "              10.77.93.1:40000 -> 10.77.93.2:5593 udp",
        f"  {ms[1]:>11}  {b:<26} veth-b       veth    netif_rx"
        "                   netns kdbgjourney-a -> kdbgjourney-b, device veth-a -> veth-b (veth)",
        f"  {ms[2]:>11}  {b:<26} veth-b       veth    netif_receive_skb",
        f"  {ms[3]:>11}  {b:<26} br0          bridge  netif_receive_skb_entry"
        "    device veth-b -> br0 (bridge)",
        f"  {ms[4]:>11}  {b:<26} br0          bridge  netif_receive_skb",
    ]


def test_text_says_what_nat_changed_and_why_it_is_incomplete() -> None:
    raw, rec = _complete()
    for hop in raw.journey.hops[3:5]:  # as if DNAT had rewritten it at br0
        hop.seen.daddr[3] = 9
        hop.seen.dport = 7000
    j = dataclasses.replace(journey_of(raw, rec), notes=("a note",))
    lines = journey_lines(j)
    assert lines[4].endswith("device veth-b -> br0 (bridge), daddr 10.77.93.2 -> 10.77.93.9, "
                             "dport 5593 -> 7000")
    assert lines[-1] == "  incomplete: a note"
    assert journey_lines(Journey((), ("not followed",))) == [
        "journey: no hops", "  incomplete: not followed"]


def test_the_drop_program_is_attached_before_the_hops() -> None:
    """A packet that crossed a hop before the drop program was attached, and was dropped
    unseen, would leave its slot open: the next packet at its address within the idle
    time would continue its journey (a stale first hop, before the tracer attached)."""
    from kdbg.drops.journeys import JourneyDropProbe

    hops = journeyprog.attachments(HOP_TRACEPOINTS[:2])
    probe = JourneyDropProbe("text", hops)
    assert probe.attachments[0][0] == "btf:kfree_skb"
    assert probe.attachments[1:] == hops
