"""bpf/drop_event.h and kdbg/trace/layout.py must describe the same bytes."""

from __future__ import annotations

import ctypes as ct
import re

from kdbg.dirs import BPF_DIR
from kdbg.trace import layout

CTYPES = {"__u8": ct.c_uint8, "__u16": ct.c_uint16, "__u32": ct.c_uint32,
          "__s32": ct.c_int32, "__u64": ct.c_uint64, "char": ct.c_char}


def header_struct(name: str) -> list[tuple[str, object]]:
    text = (BPF_DIR / "drop_event.h").read_text()
    consts = {k: int(v) for k, v in re.findall(r"#define (KDBG_\w+) (\d+)", text)}
    body = re.search(rf"struct {name} \{{(.*?)\}};", text, re.S)
    assert body, name
    fields = []
    for ctype, fname, dim in re.findall(r"^\s*(\w+) (\w+)(?:\[(\w+)\])?;", body.group(1), re.M):
        base = CTYPES[ctype]
        if dim:
            fields.append((fname, base * (int(dim) if dim.isdigit() else consts[dim])))
        else:
            fields.append((fname, base))
    return fields


def ctypes_fields(cls: type[ct.Structure]) -> list[tuple[str, object]]:
    return list(cls._fields_)  # type: ignore[arg-type]


def _same(a: list[tuple[str, object]], b: list[tuple[str, object]]) -> None:
    assert [n for n, _ in a] == [n for n, _ in b]
    for (name, ta), (_, tb) in zip(a, b, strict=True):
        assert ct.sizeof(ta) == ct.sizeof(tb), name  # type: ignore[arg-type]


def test_drop_event_matches_header() -> None:
    _same(header_struct("kdbg_drop_event"), ctypes_fields(layout.RawDropEvent))
    assert ct.sizeof(layout.RawDropEvent) == 136


def test_stats_key_matches_header() -> None:
    _same(header_struct("kdbg_stats_key"), ctypes_fields(layout.RawStatsKey))


def test_counter_slots_match_header() -> None:
    text = (BPF_DIR / "drop_event.h").read_text()
    slots = {k: int(v) for k, v in re.findall(r"#define KDBG_CTR_(\w+) (\d+)", text)}
    assert slots == {"LOST": layout.CTR_LOST, "STATS_FULL": layout.CTR_STATS_FULL,
                     "SEEN": layout.CTR_SEEN}
    assert f"#define KDBG_NR_CTRS {layout.NR_CTRS}" in text
