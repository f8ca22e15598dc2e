"""bpf/drop_event.h and kdbg/trace/layout.py must describe the same bytes."""

from __future__ import annotations

import ctypes as ct
import re

from kdbg.dirs import BPF_DIR
from kdbg.trace import layout
from tests.unit.cheaders import header_fields, mirror


def test_drop_event_matches_header() -> None:
    assert header_fields("drop_event.h", "kdbg_drop_event") == mirror(layout.RawDropEvent)
    assert ct.sizeof(layout.RawDropEvent) == 232


def test_stats_key_matches_header() -> None:
    assert header_fields("drop_event.h", "kdbg_stats_key") == mirror(layout.RawStatsKey)


def test_counter_slots_match_header() -> None:
    text = (BPF_DIR / "drop_event.h").read_text()
    slots = {k: int(v) for k, v in re.findall(r"#define KDBG_CTR_(\w+) (\d+)", text)}
    assert slots == {"LOST": layout.CTR_LOST, "STATS_FULL": layout.CTR_STATS_FULL,
                     "SEEN": layout.CTR_SEEN, "MATCHED": layout.CTR_MATCHED}
    assert f"#define KDBG_NR_CTRS {layout.NR_CTRS}" in text


def test_more_key_matches_header() -> None:
    assert header_fields("drop_event.h", "kdbg_more_key") == mirror(layout.RawMoreKey)
    assert ct.sizeof(layout.RawMoreKey) == 80


def test_chain_structs_match_header() -> None:
    assert header_fields("drop_event.h", "kdbg_chain") == mirror(layout.RawChain)
    assert header_fields("drop_event.h", "kdbg_chains",
                         {"struct kdbg_chain": layout.RawChain}) == mirror(layout.RawChains)
    assert header_fields("drop_event.h", "kdbg_learn") == mirror(layout.RawLearn)
    text = (BPF_DIR / "drop_event.h").read_text()
    consts = {k: int(v) for k, v in re.findall(r"#define KDBG_(\w+) (\d+)", text)}
    assert consts["CHAIN_SLOTS"] == layout.CHAIN_SLOTS
    assert consts["CHAINS_PER_SITE"] == layout.CHAINS_PER_SITE
    assert consts["CHAIN_SPAN"] == layout.CHAIN_SPAN
    assert consts["LEARN_BYTES"] == consts["LEARN_PAGES"] * consts["PAGE"] == layout.LEARN_BYTES


def test_tally_matches_header() -> None:
    assert header_fields("drop_event.h", "kdbg_tally",
                         {"struct kdbg_stats_key": layout.RawStatsKey}) == mirror(layout.RawTally)
    text = (BPF_DIR / "drop_event.h").read_text()
    assert f"#define KDBG_TALLY_SLOTS {layout.TALLY_SLOTS}" in text
