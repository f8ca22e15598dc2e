"""A loaded BPF program's JITed code as symbols: for the guard, kdbg's frame names, and gdb.

The kernel lists a JITed program in kallsyms as ``bpf_prog_<tag>_<name> [bpf]``, with no
size, and outside every module's span; kdbg learns each function's address and length
from the program's ``bpf_prog_info`` (``jited_ksyms``, ``jited_func_lens``) instead.
:func:`symbol_file` writes them as a small ELF file gdb loads with ``add-symbol-file``:
one ``SHT_NOBITS`` text section and one ``STT_FUNC`` symbol per function, at its address
(the approach of Linux's scripts/gdb BPF support: synthetic symbols per program).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

BPF_MODULE = "bpf"  # the module column kallsyms gives JITed programs

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
ET_EXEC, EM_X86_64 = 2, 62
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS = 1, 2, 3, 8
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
STB_LOCAL, STB_GLOBAL, STT_FUNC = 0, 1, 2


@dataclass(frozen=True)
class JitedImage:
    """One JITed function of a loaded program: its kallsyms name, where it is, how long,
    and the program it belongs to (id and kind, ``xdp`` or ``tc``)."""

    name: str
    address: int
    size: int
    prog_id: int
    kind: str

    def __contains__(self, address: object) -> bool:
        return isinstance(address, int) and self.address <= address < self.address + self.size


def images(prog_id: int, kind: str, ksym: str,
           funcs: tuple[tuple[int, int], ...]) -> tuple[JitedImage, ...]:
    """The images of a program's JITed functions (``funcs``: (address, length), the main
    one first, named ``ksym``; a subprogram gets ``ksym`` with ``_f<N>``, N its index)."""
    return tuple(JitedImage(ksym if i == 0 else f"{ksym}_f{i}", addr, size, prog_id, kind)
                 for i, (addr, size) in enumerate(funcs) if addr and size)


@dataclass(frozen=True)
class JitedLine:
    """Where one source line's JITed code starts (a line-info record's ``jited_line_info``)."""

    address: int
    file: str
    line: int


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


# .debug_abbrev: 1 a compile unit (name, stmt_list, low_pc, high_pc), 2 a subprogram
_ABBREV = bytes([1, 0x11, 1, 0x03, 0x08, 0x10, 0x17, 0x11, 0x01, 0x12, 0x01, 0, 0,
                 2, 0x2E, 0, 0x03, 0x08, 0x11, 0x01, 0x12, 0x01, 0x3F, 0x19, 0, 0, 0])
_STD_LENGTHS = bytes([0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1])


def _line_program(func: JitedImage, rows: list[JitedLine]) -> bytes:
    """One DWARF 4 line-number program: ``rows`` (in ``func``) in address order."""
    files = sorted({r.file for r in rows})
    header = bytes([1, 1, 1, 0xFB, 14, 13]) + _STD_LENGTHS + b"\0"
    header += b"".join(f.encode() + b"\0\0\0\0" for f in files) + b"\0"
    prog = bytearray()
    line = 1
    for r in rows:
        prog += b"\0" + _uleb(9) + b"\x02" + struct.pack("<Q", r.address)
        prog += b"\x04" + _uleb(files.index(r.file) + 1)
        prog += b"\x03" + _sleb(r.line - line) + b"\x01"
        line = r.line
    prog += b"\0" + _uleb(9) + b"\x02" + struct.pack("<Q", func.address + func.size)
    prog += b"\0\x01\x01"
    body = struct.pack("<HI", 4, len(header)) + header + bytes(prog)
    return struct.pack("<I", len(body)) + body


def _debug_info(func: JitedImage, rows: list[JitedLine], line_off: int) -> bytes:
    """One compile unit for ``func``: its first line's file, its line program, and one
    subprogram (so gdb's frames name the function beside the line)."""
    pcs = struct.pack("<QQ", func.address, func.address + func.size)
    die = (b"\x01" + rows[0].file.encode() + b"\0" + struct.pack("<I", line_off) + pcs
           + b"\x02" + func.name.encode() + b"\0" + pcs + b"\0")
    body = struct.pack("<HIB", 4, 0, 8) + die
    return struct.pack("<I", len(body)) + body


def debug_sections(funcs: tuple[JitedImage, ...], lines: tuple[JitedLine, ...]
                   ) -> dict[str, bytes]:
    """``.debug_abbrev``, ``.debug_info`` and ``.debug_line`` giving gdb the source line
    of each JITed address in ``lines`` (one compile unit per function with lines)."""
    info, table = bytearray(), bytearray()
    for func in funcs:
        rows = sorted((r for r in lines if r.address in func and r.line),
                      key=lambda r: r.address)
        if rows:
            info += _debug_info(func, rows, len(table))
            table += _line_program(func, rows)
    if not info:
        return {}
    return {".debug_abbrev": _ABBREV, ".debug_info": bytes(info), ".debug_line": bytes(table)}


def symbol_file(funcs: tuple[JitedImage, ...], lines: tuple[JitedLine, ...] = ()) -> bytes:
    """An x86-64 ELF file whose symbols are ``funcs`` at their addresses, for gdb's
    ``add-symbol-file FILE`` (which then takes each section's address from the file);
    with ``lines``, DWARF line tables that give those addresses their source lines."""
    shstr = bytearray(b"\0")
    strtab = bytearray(b"\0")

    def name(table: bytearray, text: str) -> int:
        off = len(table)
        table += text.encode() + b"\0"
        return off

    sections: list[bytes] = [_SHDR.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    syms = [_SYM.pack(0, 0, 0, 0, 0, 0)]
    for f in funcs:
        index = len(sections)
        sections.append(_SHDR.pack(name(shstr, f".text.{f.name}"), SHT_NOBITS,
                                   SHF_ALLOC | SHF_EXECINSTR, f.address, 0, f.size, 0, 0, 16, 0))
        syms.append(_SYM.pack(name(strtab, f.name), (STB_GLOBAL << 4) | STT_FUNC, 0, index,
                              f.address, f.size))
    symtab = b"".join(syms)
    strtab_bytes = bytes(strtab)
    symtab_name, strtab_name, shstr_name = (name(shstr, n) for n in
                                            (".symtab", ".strtab", ".shstrtab"))
    body = bytearray()
    offset = _EHDR.size

    def place(data: bytes) -> int:
        nonlocal offset
        at = offset + len(body)
        body.extend(data)
        body.extend(b"\0" * (-len(body) % 8))
        return at

    for sname, data in debug_sections(funcs, lines).items():
        sections.append(_SHDR.pack(name(shstr, sname), SHT_PROGBITS, 0, 0, place(data),
                                   len(data), 0, 0, 1, 0))
    sym_off = place(symtab)
    str_off = place(strtab_bytes)
    strtab_index = len(sections) + 1
    sections.append(_SHDR.pack(symtab_name, SHT_SYMTAB, 0, 0, sym_off, len(symtab),
                               strtab_index, 1, 8, _SYM.size))
    sections.append(_SHDR.pack(strtab_name, SHT_STRTAB, 0, 0, str_off, len(strtab_bytes),
                               0, 0, 1, 0))
    shstr_off = place(bytes(shstr))
    sections.append(_SHDR.pack(shstr_name, SHT_STRTAB, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0))
    shoff = offset + len(body)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header = _EHDR.pack(ident, ET_EXEC, EM_X86_64, 1, 0, 0, shoff, 0, _EHDR.size, 0, 0,
                        _SHDR.size, len(sections), len(sections) - 1)
    return header + bytes(body) + b"".join(sections)
