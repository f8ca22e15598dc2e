"""A loaded BPF program's source lines, from its BTF line info.

The kernel keeps, for a program loaded with BTF, one ``struct bpf_line_info`` per
source line start (``insn_off``, ``file_name_off``, ``line_off``, ``line_col``; the
offsets index the program's own BTF strings, and ``line_off`` names the text of the
line itself). With the program's translated instructions this answers two questions:
which line an instruction belongs to (:meth:`LineTable.line_at`), and which lines
can return a given value (:meth:`LineTable.returning`).

An fexit program sees what a program returned, never which ``exit`` instruction it
ran. :meth:`LineTable.returning` therefore names every instruction that sets ``r0`` to
a constant from which some path reaches an ``exit`` with ``r0`` equal to the value,
following only constant arithmetic on ``r0`` on the way (clang may return ``cond ? 2 :
0`` as ``r0 = 1; if !cond r0 = 0; r0 <<= 1``): exact when the program has one such
site for the verdict, the candidates otherwise, and none when the program computes its
verdict from what is not a constant (a map, say). The line named is the line-info record
that instruction falls under. clang often gives ``return XDP_DROP;`` no record of its
own (it sets ``r0`` before the branch that decides), so the line is then the condition
that decides the verdict, as the program's line info has it.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from dataclasses import dataclass

from kdbg.errors import BtfError

BTF_MAGIC = 0xEB9F
LINE_INFO_SIZE = 16
# opcodes (class | source | op) of include/uapi/linux/bpf.h
MOV64_K, MOV32_K = 0xB7, 0xB4
EXIT, JA, CALL, LD_IMM64 = 0x95, 0x05, 0x85, 0x18
JMP_CLASSES = (0x05, 0x06)  # BPF_JMP, BPF_JMP32
STEP_BUDGET = 64  # instructions followed from a candidate before giving up on it
ALU_CLASSES = (0x04, 0x07)  # BPF_ALU, BPF_ALU64
MASK64 = (1 << 64) - 1
# BPF_ALU ops with a constant operand that kdbg follows on r0 (class | BPF_K | op); a
# move of another constant into r0 is a site of its own, not followed.
ALU_K = {0x00: lambda a, b: a + b, 0x10: lambda a, b: a - b, 0x20: lambda a, b: a * b,
         0x40: lambda a, b: a | b, 0x50: lambda a, b: a & b, 0x60: lambda a, b: a << (b & 63),
         0x70: lambda a, b: a >> (b & 63), 0xA0: lambda a, b: a ^ b}


@dataclass(frozen=True)
class SourceLine:
    """One source line of a program: where it is, its text, its first instruction."""

    file: str
    line: int
    col: int
    text: str
    insn: int

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "text": self.text, "insn": self.insn}


def btf_strings(blob: bytes) -> bytes:
    """The string section of a BTF object."""
    if len(blob) < 24:
        raise BtfError("program BTF too short")
    magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
    if magic != BTF_MAGIC:
        raise BtfError(f"program BTF has magic 0x{magic:x}")
    _type_off, _type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
    start = hdr_len + str_off
    return blob[start:start + str_len]


def _string(strings: bytes, off: int) -> str:
    end = strings.find(b"\0", off)
    return strings[off:end if end >= 0 else len(strings)].decode(errors="replace")


class LineTable:
    """A program's line info, over its translated instructions."""

    def __init__(self, line_info: bytes, btf: bytes, xlated: bytes) -> None:
        strings = btf_strings(btf)
        lines = []
        for pos in range(0, len(line_info) - LINE_INFO_SIZE + 1, LINE_INFO_SIZE):
            insn, file_off, line_off, line_col = struct.unpack_from("<IIII", line_info, pos)
            lines.append(SourceLine(_string(strings, file_off), line_col >> 10,
                                    line_col & 0x3FF, _string(strings, line_off).strip(), insn))
        self.lines = tuple(sorted(lines, key=lambda s: s.insn))
        self._starts = [s.insn for s in self.lines]
        self.insns = [struct.unpack_from("<BBhi", xlated, i)
                      for i in range(0, len(xlated) - 7, 8)]

    def line_at(self, insn: int) -> SourceLine | None:
        """The line instruction ``insn`` belongs to (the last one starting at or before it)."""
        at = bisect_right(self._starts, insn) - 1
        return self.lines[at] if at >= 0 else None

    def returning(self, value: int) -> tuple[SourceLine, ...]:
        """The lines that return ``value`` (see the module's docstring), in source order,
        each once."""
        seen: dict[tuple[str, int], SourceLine] = {}
        for i, (op, regs, _off, imm) in enumerate(self.insns):
            if op in (MOV64_K, MOV32_K) and regs & 0x0F == 0 \
                    and value in self._exits_with(i + 1, imm & 0xFFFFFFFF):
                line = self.line_at(i)
                if line is not None and line.line:  # line 0: code of no source line
                    seen.setdefault((line.file, line.line), line)
        return tuple(sorted(seen.values(), key=lambda s: (s.file, s.line)))

    def _exits_with(self, start: int, r0: int) -> set[int]:
        """The values ``r0`` holds at each ``exit`` reached from ``start``, following
        constant arithmetic on ``r0`` (``r0 <<= 1``: a verdict computed without a branch)
        and stopping where ``r0`` takes a value that is not a constant."""
        out: set[int] = set()
        todo, done = [(start, r0)], set[tuple[int, int]]()
        while todo and len(done) < STEP_BUDGET:
            i, val = todo.pop()
            if (i, val) in done or not 0 <= i < len(self.insns):
                continue
            done.add((i, val))
            op, regs, off, imm = self.insns[i]
            cls = op & 0x07
            if op == EXIT:
                out.add(val)
            elif cls in JMP_CLASSES and op != CALL:
                todo.append((i + 1 + off, val))
                if op != JA:
                    todo.append((i + 1, val))
            elif cls in ALU_CLASSES and regs & 0x0F == 0 and not op & 0x08 and op & 0xF0 in ALU_K:
                result = ALU_K[op & 0xF0](val, imm & 0xFFFFFFFF if cls == 0x04 else imm)
                todo.append((i + 1, result & (0xFFFFFFFF if cls == 0x04 else MASK64)))
            elif op == CALL or (cls in (0x00, 0x01, 0x04, 0x07) and regs & 0x0F == 0):
                continue  # r0 written with what is not a constant: not followed
            else:
                todo.append((i + 2 if op == LD_IMM64 else i + 1, val))
        return out
