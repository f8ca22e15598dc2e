"""File and line for kernel addresses, from a vmlinux that carries DWARF.

A 600 MB debug vmlinux is too big to parse in Python, so one ``addr2line``
process per vmlinux is kept alive and fed addresses on its stdin; binutils'
addr2line flushes after every answer, which makes it usable as a server.
Answers are cached per address. Addresses given here are the target's runtime
addresses: the KASLR offset (runtime − link time) is taken off before asking.
A drop location from the tracer is a return address: ask for ``addr - 1`` to get
the line of the call itself.

The same module reads the few ELF facts kdbg needs without DWARF tooling:
section headers (is there ``.debug_info``? where is ``.text`` linked? the raw
``.BTF`` section) and the symbol table through ``nm``.
"""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from kdbg.errors import BadInput, KdbgError, ProbeUnavailable
from kdbg.lifetime import die_with_parent

# Top-level directories of a kernel source tree, used to cut a build prefix off
# a path when the source root could not be learned from a known function.
_TOPDIRS = frozenset({
    "arch", "block", "certs", "crypto", "drivers", "fs", "include", "init", "io_uring",
    "ipc", "kernel", "lib", "mm", "net", "rust", "samples", "security", "sound", "usr", "virt",
})
_SENTINEL_ADDR = 0xFFFFFFFFFFFFF000


class DwarfError(KdbgError):
    """addr2line failed, timed out, or the vmlinux has no usable debug info."""


@dataclass(frozen=True)
class SourceFrame:
    """One frame of an inline chain: function name and source position."""

    function: str
    file: str
    line: int | None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class SourceLine:
    """What DWARF says about one address: the inline chain, innermost first."""

    address: int
    frames: tuple[SourceFrame, ...]

    @property
    def file(self) -> str:
        """Source file of the code at the address (innermost, possibly a header)."""
        return self.frames[0].file

    @property
    def line(self) -> int | None:
        return self.frames[0].line

    @property
    def function_frame(self) -> SourceFrame:
        """The outermost frame: the real (not inlined) function and its own file."""
        return self.frames[-1]

    def __str__(self) -> str:
        return str(self.frames[0])


@dataclass(frozen=True)
class ElfSection:
    """One ELF section header: link address, file offset and size."""

    name: str
    address: int
    offset: int
    size: int


def elf_sections(path: str | Path) -> dict[str, ElfSection]:
    """Section headers of a 64-bit little-endian ELF file (a vmlinux), by name."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
                raise BadInput(f"{path}: not a 64-bit little-endian ELF file")
            shoff, = struct.unpack_from("<Q", ident, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ident, 0x3A)
            f.seek(shoff)
            table = f.read(shentsize * shnum)
            raw = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
            _, _, _, _, str_off, str_size = raw[shstrndx]
            f.seek(str_off)
            names = f.read(str_size)
    except OSError as err:
        raise ProbeUnavailable(f"cannot read {path}: {err.strerror}") from err
    out: dict[str, ElfSection] = {}
    for name_off, _type, _flags, addr, off, size in raw:
        name = names[name_off : names.index(b"\0", name_off)].decode()
        out[name] = ElfSection(name, addr, off, size)
    return out


def has_dwarf(path: str | Path) -> bool:
    """True when the ELF file carries ``.debug_info`` (and ``.debug_line``)."""
    sections = elf_sections(path)
    return ".debug_info" in sections and ".debug_line" in sections


def read_section(path: str | Path, name: str) -> bytes | None:
    """Raw bytes of one ELF section (e.g. ``.BTF``), or None when absent."""
    sec = elf_sections(path).get(name)
    if sec is None:
        return None
    with open(path, "rb") as f:
        f.seek(sec.offset)
        return f.read(sec.size)


def nm_text(path: str | Path, *, timeout: float = 120.0) -> str:
    """The vmlinux symbol table as kallsyms-shaped text (``nm``: ADDR TYPE NAME)."""
    nm = shutil.which("nm")
    if nm is None:
        raise ProbeUnavailable("nm not found", hint="install binutils")
    proc = subprocess.run([nm, "--defined-only", str(path)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise BadInput(f"nm {path}: {proc.stderr.strip()}")
    return proc.stdout


def relative_source(path: str, root: str | None = None) -> str:
    """``/build/linux-6.1/net/ipv4/tcp.c`` → ``net/ipv4/tcp.c`` (kernel-tree relative)."""
    if root and path.startswith(root):
        return path[len(root):]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts[:-1]):
        if part in _TOPDIRS:
            return "/".join(parts[i:])
    return "/".join(parts)


class Dwarf:
    """A persistent ``addr2line -f -i -a`` over one vmlinux, with a per-address cache."""

    def __init__(self, vmlinux: str | Path, *, kaslr_offset: int = 0,
                 timeout: float = 60.0, addr2line: str | None = None,
                 section: str | None = None) -> None:
        self.vmlinux = Path(vmlinux)
        self.kaslr_offset = kaslr_offset
        self.section = section  # addresses are offsets in this section (a module's .ko)
        self.timeout = timeout
        self.source_root: str | None = None
        self._tool = addr2line or shutil.which("addr2line")
        if self._tool is None:
            raise ProbeUnavailable("addr2line not found", hint="install binutils")
        if not self.vmlinux.is_file():
            raise BadInput(f"no vmlinux at {self.vmlinux}")
        if not has_dwarf(self.vmlinux):
            raise DwarfError(f"{self.vmlinux} has no DWARF (.debug_info)",
                             hint="use the -dbg package's vmlinux or a kernel built with "
                                  "CONFIG_DEBUG_INFO")
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._cache: dict[int, SourceLine | None] = {}

    # -- process ------------------------------------------------------------

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [str(self._tool), "-f", "-i", "-a", "-e", str(self.vmlinux),
                 *(["-j", self.section] if self.section else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # addr2line never outlives kdbg
            )
            self._buf = b""
        return self._proc

    def _readline(self, proc: subprocess.Popen[bytes], deadline: float) -> str:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise DwarfError(f"addr2line on {self.vmlinux} did not answer in "
                                 f"{self.timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.close()
                    raise DwarfError(f"addr2line on {self.vmlinux} exited")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def close(self) -> None:
        """Stop the addr2line process (the cache survives)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin:
                proc.stdin.close()
            proc.kill()
            proc.wait(timeout=5)
            if proc.stdout:
                proc.stdout.close()

    def __enter__(self) -> Dwarf:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- queries ------------------------------------------------------------

    def line(self, address: int) -> SourceLine | None:
        """File:line (with inline chain) for a runtime address; None where DWARF is silent."""
        if address in self._cache:
            return self._cache[address]
        link = address - self.kaslr_offset
        if not 0 <= link < 1 << 64:
            return None
        result = self._parse(address, self._ask(link))
        self._cache[address] = result
        return result

    def _ask(self, link: int) -> list[str]:
        """addr2line's lines for one link-time address: function, file:line, repeated.

        Each query is followed by a sentinel query; the answer ends where the
        sentinel's echo starts. The sentinel's own answer is skipped by the next
        query, which first reads up to the echo of its address.
        """
        sentinel = _SENTINEL_ADDR if link != _SENTINEL_ADDR else _SENTINEL_ADDR - 1
        proc = self._start()
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"0x{link:x}\n0x{sentinel:x}\n".encode())
            proc.stdin.flush()
        except BrokenPipeError as err:
            self.close()
            raise DwarfError(f"addr2line on {self.vmlinux} exited") from err
        deadline = time.monotonic() + self.timeout
        echo, stop = f"0x{link:016x}", f"0x{sentinel:016x}"
        while self._readline(proc, deadline) != echo:
            pass
        lines: list[str] = []
        while (text := self._readline(proc, deadline)) != stop:
            lines.append(text)
        return lines

    def _parse(self, address: int, lines: list[str]) -> SourceLine | None:
        frames = []
        for func, pos in zip(lines[0::2], lines[1::2], strict=False):
            file, _, num = pos.rpartition(":")
            num = num.split(" ", 1)[0]  # "123 (discriminator 4)"
            if not file or file == "??":
                continue
            frames.append(SourceFrame(func, relative_source(file, self.source_root),
                                      int(num) if num.isdigit() and num != "0" else None))
        return SourceLine(address, tuple(frames)) if frames else None

    def learn_root(self, address: int, known_file: str = "init/main.c") -> str | None:
        """Learn the build's source prefix from a function known to live in ``known_file``."""
        raw = self._raw_file(address)
        if raw is None or not raw.endswith(known_file):
            return None
        self.source_root = raw[: -len(known_file)]
        self._cache.clear()
        return self.source_root

    def _raw_file(self, address: int) -> str | None:
        """The outermost frame's file exactly as addr2line prints it."""
        positions = self._ask(address - self.kaslr_offset)[1::2]
        return positions[-1].rpartition(":")[0] if positions else None
