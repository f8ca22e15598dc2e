"""Read a struct of one of bpf/'s headers as (field, size) pairs, to compare with the
ctypes mirror kdbg decodes it with (tests/unit/test_*layout*.py, test_hwdrops, test_record)."""

from __future__ import annotations

import ctypes as ct
import re
from collections.abc import Mapping

from kdbg.dirs import BPF_DIR

CTYPES: dict[str, type] = {"__u8": ct.c_uint8, "__u16": ct.c_uint16, "__u32": ct.c_uint32,
                           "__s32": ct.c_int32, "__u64": ct.c_uint64, "char": ct.c_char}


def header_fields(header: str, struct: str,
                  structs: Mapping[str, type] | None = None) -> list[tuple[str, int]]:
    """``struct``'s fields in ``bpf/header``, in order, with their sizes in bytes. Array
    lengths may be numbers or the header's ``KDBG_`` constants; a member that is itself
    a struct is sized by ``structs['struct NAME']``."""
    text = (BPF_DIR / header).read_text()
    consts = {k: int(v) for k, v in re.findall(r"#define (KDBG_\w+) (\d+)", text)}
    body = re.search(rf"struct {struct} \{{(.*?)\}};", text, re.S)
    assert body, struct
    types = {**CTYPES, **(structs or {})}
    out = []
    for ctype, name, dim in re.findall(r"^\s*((?:struct )?\w+) (\w+)(?:\[(\w+)\])?;",
                                       body.group(1), re.M):
        n = (int(dim) if dim.isdigit() else consts[dim]) if dim else 1
        out.append((name, ct.sizeof(types[ctype]) * n))
    return out


def mirror(cls: type[ct.Structure]) -> list[tuple[str, int]]:
    """A ctypes structure's fields, in order, with their sizes in bytes."""
    return [(name, ct.sizeof(t)) for name, t in cls._fields_]  # type: ignore[misc]
