"""bpf/path_event.h and kdbg/path/layout.py must describe the same bytes."""

from __future__ import annotations

import ctypes as ct
import re

from kdbg.dirs import BPF_DIR
from kdbg.path import layout
from kdbg.trace import hops
from kdbg.trace.hops import HOP_TRACEPOINTS
from tests.unit.cheaders import header_fields, mirror

HEADER = (BPF_DIR / "path_event.h").read_text()


def test_event_matches_header() -> None:
    assert header_fields("hop_seen.h", "kdbg_hop_seen") == mirror(hops.RawHopSeen)
    assert header_fields("path_event.h", "kdbg_path_event", {
        "struct kdbg_hop_seen": hops.RawHopSeen}) == mirror(layout.RawPathEvent)
    assert (ct.sizeof(hops.RawHopSeen), ct.sizeof(layout.RawPathEvent)) == (72, 120)


def test_track_value_matches_header() -> None:
    assert header_fields("path_event.h", "kdbg_path_track") == mirror(layout.RawPathTrack)


def test_tracepoint_ids_match_header() -> None:
    points = (BPF_DIR / "hop_seen.h").read_text()
    ids = {k.lower(): int(v) for k, v in re.findall(r"#define KDBG_TP_(\w+) (\d+)", points)}
    named = {name.split(":")[1]: tp for tp, name in hops.TP_NAMES.items()}
    assert ids == named
    assert '#include "hop_seen.h"' in HEADER
    assert {(s, n) for s, n, _i, _rx in HOP_TRACEPOINTS} == {
        tuple(v.split(":")) for k, v in hops.TP_NAMES.items()
        if k not in (hops.TP_KFREE_SKB, hops.TP_CONSUME_SKB)}


def test_counter_slots_match_header() -> None:
    slots = {k: int(v) for k, v in re.findall(r"#define KDBG_PATH_CTR_(\w+) (\d+)", HEADER)}
    assert slots == {"LOST": layout.CTR_LOST, "TRACK_FULL": layout.CTR_TRACK_FULL,
                     "PACKETS": layout.CTR_PACKETS, "ENDS": layout.CTR_ENDS}
    assert f"#define KDBG_PATH_NR_CTRS {layout.NR_CTRS}" in HEADER
