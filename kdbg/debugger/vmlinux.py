"""Just enough ELF to place a vmlinux: its ``_text`` address and whether it has DWARF.

gdb loads the symbols; kdbg only needs the link-time ``_text`` to compute the KASLR
offset (runtime ``_text`` from the target's kallsyms minus the file's), and must know
whether the file carries ``.debug_info`` before it trusts gdb's unwinding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from kdbg.errors import BadInput


@dataclass(frozen=True)
class VmlinuxInfo:
    """``text`` is the link-time address of ``_text``; ``has_dwarf`` if .debug_info exists."""

    path: Path
    text: int
    has_dwarf: bool


def _sections(f, shoff: int, shentsize: int, shnum: int, shstrndx: int) -> list[tuple]:
    f.seek(shoff)
    raw = f.read(shentsize * shnum)
    secs = [struct.unpack_from("<IIQQQQIIQQ", raw, i * shentsize) for i in range(shnum)]
    strtab = secs[shstrndx]
    f.seek(strtab[4])
    names = f.read(strtab[5])
    out = []
    for s in secs:
        end = names.find(b"\0", s[0])
        out.append((names[s[0] : end].decode(errors="replace"), *s))
    return out


def inspect(path: str | Path) -> VmlinuxInfo:
    """Read ``_text`` (from .symtab, else the start of .text) and the DWARF flag."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            ident = f.read(64)
            if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
                raise BadInput(f"{path} is not a little-endian ELF64 file (a vmlinux)")
            shoff = struct.unpack_from("<Q", ident, 0x28)[0]
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ident, 0x3A)
            secs = _sections(f, shoff, shentsize, shnum, shstrndx)
            by_name = {s[0]: s for s in secs}
            has_dwarf = ".debug_info" in by_name
            text = _symtab_text(f, secs)
            if text is None:
                if ".text" not in by_name:
                    raise BadInput(f"{path} has neither a _text symbol nor a .text section")
                text = by_name[".text"][4]
    except OSError as err:
        raise BadInput(f"cannot read vmlinux {path}: {err.strerror}") from err
    return VmlinuxInfo(path, text, has_dwarf)


def _symtab_text(f, secs: list[tuple]) -> int | None:
    symtab = next((s for s in secs if s[2] == 2), None)  # SHT_SYMTAB
    if symtab is None:
        return None
    strsec = secs[symtab[7]]
    f.seek(strsec[5])
    strings = f.read(strsec[6])
    needle = b"\0_text\0"
    pos = strings.find(needle)
    if pos < 0:
        return None
    name_off = pos + 1
    f.seek(symtab[5])
    data = f.read(symtab[6])
    for st_name, _info, _other, _shndx, value, _size in struct.iter_unpack("<IBBHQQ", data):
        if st_name == name_off:
            return int(value)
    return None


def kaslr_offset(vmlinux_text: int, runtime_text: int) -> int:
    """The KASLR slide: where ``_text`` runs minus where the file links it."""
    return runtime_text - vmlinux_text
