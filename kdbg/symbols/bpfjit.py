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


def symbol_file(funcs: tuple[JitedImage, ...]) -> bytes:
    """An x86-64 ELF file whose symbols are ``funcs`` at their addresses, for gdb's
    ``add-symbol-file FILE`` (which then takes each section's address from the file)."""
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
