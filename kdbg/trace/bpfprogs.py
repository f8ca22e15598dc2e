"""The BPF programs loaded in the running kernel, as ``bpf(2)`` tells them.

Found by id (``BPF_PROG_GET_NEXT_ID``), opened (``BPF_PROG_GET_FD_BY_ID``) and asked
what they are (``BPF_OBJ_GET_INFO_BY_FD``): type, name, tag, the address of their
JITed code, the BTF id of their main function (what an fexit program attaches to),
and their line table (:mod:`kdbg.symbols.bpflines`). A program's facts can be
recorded as JSON and read back (tests/data/bpfprog/).
"""

from __future__ import annotations

import base64
import ctypes as ct
import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kdbg.errors import BtfError
from kdbg.symbols.bpflines import LineTable
from kdbg.trace import bpfsys

TYPE_NAMES = {bpfsys.PROG_XDP: "xdp", bpfsys.PROG_SCHED_CLS: "tc"}


@dataclass
class ProgFacts:
    """One loaded program and what kdbg read about it."""

    id: int
    type: int
    name: str
    tag: str
    address: int  # of its JITed main function (0 when the address is hidden)
    func_btf_id: int  # of its main function in its own BTF (0: no BTF)
    line_info: bytes = b""
    btf: bytes = b""
    xlated: bytes = b""
    fd: int = -1  # open while kdbg traces it
    # JITed code: (address, length) of each function, the main one first; and the
    # JITed address of each line-info record, in the records' order
    jited_funcs: tuple[tuple[int, int], ...] = ()
    jited_lines: tuple[int, ...] = ()
    _table: LineTable | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))

    @property
    def ksym(self) -> str:
        """The name the kernel gives its JITed code in kallsyms."""
        return f"bpf_prog_{self.tag}_{self.name}"

    @property
    def lines(self) -> LineTable | None:
        """Its line table, or None without BTF line info."""
        if self._table is None and self.line_info and self.btf:
            try:
                self._table = LineTable(self.line_info, self.btf, self.xlated)
            except BtfError:
                return None
        return self._table

    def to_record(self) -> dict[str, Any]:
        """JSON-ready, blobs in base64 (a recording for tests)."""
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        return {"id": self.id, "type": self.type, "name": self.name, "tag": self.tag,
                "address": self.address, "func_btf_id": self.func_btf_id,
                "line_info": b64(self.line_info), "btf": b64(self.btf),
                "xlated": b64(self.xlated),
                "jited_funcs": [list(f) for f in self.jited_funcs],
                "jited_lines": list(self.jited_lines)}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> ProgFacts:
        blob = lambda k: base64.b64decode(rec[k])  # noqa: E731
        return cls(rec["id"], rec["type"], rec["name"], rec["tag"], rec["address"],
                   rec["func_btf_id"], blob("line_info"), blob("btf"), blob("xlated"),
                   jited_funcs=tuple((int(a), int(n)) for a, n in rec.get("jited_funcs", ())),
                   jited_lines=tuple(int(a) for a in rec.get("jited_lines", ())))

    def jited_line_table(self) -> tuple[tuple[int, str, int], ...]:
        """Each source line's JITed start: (address, file, line), from the line-info
        records (kept in instruction order by the kernel) and ``jited_lines``."""
        table = self.lines
        if table is None or len(self.jited_lines) != len(table.lines):
            return ()
        return tuple((addr, ln.file, ln.line)
                     for ln, addr in zip(table.lines, self.jited_lines, strict=True)
                     if addr and ln.line)

    def jited_at_insn(self, insn: int) -> int | None:
        """The JITed address of the line-info record that starts at instruction ``insn``
        (None: no such record, or the kernel hid the addresses)."""
        for pos, addr in zip(range(0, len(self.line_info), 16), self.jited_lines,
                             strict=False):
            if struct.unpack_from("<I", self.line_info, pos)[0] == insn:
                return addr or None
        return None


def ids() -> Iterator[int]:
    """Every loaded program's id, ascending."""
    cur = 0
    while (nxt := bpfsys.prog_next_id(cur)) is not None:
        yield nxt
        cur = nxt


def _jited(fd: int, info: bpfsys.ProgInfo
           ) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """The JITed functions (address, length) and the JITed address of each line-info
    record: ``jited_ksyms``, ``jited_func_lens`` and ``jited_line_info`` (all zero when
    the kernel hides addresses from this reader)."""
    nfuncs, nlines = info.nr_jited_ksyms, info.nr_jited_line_info
    if not nfuncs:
        return (), ()
    addrs = (ct.c_uint64 * nfuncs)()
    lens = (ct.c_uint32 * max(info.nr_jited_func_lens, 1))()
    lines = (ct.c_uint64 * max(nlines, 1))()
    ask = bpfsys.ProgInfo(nr_jited_ksyms=nfuncs, jited_ksyms=ct.addressof(addrs),
                          nr_jited_func_lens=info.nr_jited_func_lens,
                          jited_func_lens=ct.addressof(lens),
                          nr_jited_line_info=nlines, jited_line_info_rec_size=8,
                          jited_line_info=ct.addressof(lines) if nlines else 0)
    bpfsys.prog_info_into(fd, ask)
    funcs = tuple((int(addrs[i]), int(lens[i]) if i < ask.nr_jited_func_lens else 0)
                  for i in range(nfuncs))
    return funcs, tuple(int(lines[i]) for i in range(nlines))


def open_prog(prog_id: int, types: frozenset[int]) -> ProgFacts | None:
    """Program ``prog_id`` with its fd open, if it still exists and is of ``types``."""
    try:
        fd = bpfsys.prog_fd_by_id(prog_id)
    except bpfsys.BpfCallError as err:
        if err.errno == errno.ENOENT:
            return None
        raise
    try:
        info = bpfsys.prog_info(fd)
        if info.type not in types:
            os.close(fd)
            return None
        info, xlated, funcs, lines = bpfsys.prog_tables(fd)
        func_id = 0
        for pos in range(0, len(funcs), 8):
            off, type_id = struct.unpack_from("<II", funcs, pos)
            if off == 0:
                func_id = type_id
        btf = bpfsys.btf_blob(info.btf_id) if info.btf_id else b""
        jited_funcs, jited_lines = _jited(fd, info)
        return ProgFacts(info.id, info.type, info.name.decode(errors="replace"),
                         bytes(info.tag).hex(), jited_funcs[0][0] if jited_funcs else 0,
                         func_id, lines, btf, xlated, fd, jited_funcs=jited_funcs,
                         jited_lines=jited_lines)
    except BaseException:
        os.close(fd)
        raise


def scan(types: frozenset[int], known: set[int]) -> list[ProgFacts]:
    """The programs of ``types`` loaded now whose ids are not in ``known``, opened."""
    out = []
    for prog_id in ids():
        if prog_id in known:
            continue
        prog = open_prog(prog_id, types)
        if prog is not None:
            out.append(prog)
    return out
