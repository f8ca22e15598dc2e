"""bpf/drop_event.h and kdbg/trace/layout.py must describe the same bytes."""

from __future__ import annotations

import ctypes as ct
import re

from kdbg.dirs import BPF_DIR
from kdbg.trace import layout
from tests.unit.cheaders import header_fields, mirror


def test_drop_event_matches_header() -> None:
    assert header_fields("drop_event.h", "kdbg_drop_event") == mirror(layout.RawDropEvent)
    assert ct.sizeof(layout.RawDropEvent) == 136


def test_stats_key_matches_header() -> None:
    assert header_fields("drop_event.h", "kdbg_stats_key") == mirror(layout.RawStatsKey)


def test_counter_slots_match_header() -> None:
    text = (BPF_DIR / "drop_event.h").read_text()
    slots = {k: int(v) for k, v in re.findall(r"#define KDBG_CTR_(\w+) (\d+)", text)}
    assert slots == {"LOST": layout.CTR_LOST, "STATS_FULL": layout.CTR_STATS_FULL,
                     "SEEN": layout.CTR_SEEN}
    assert f"#define KDBG_NR_CTRS {layout.NR_CTRS}" in text
