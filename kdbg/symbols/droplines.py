"""file:line for drop locations, from the target's vmlinux when it carries DWARF.

A drop's location is the return address of the call to the drop function, so the
line asked for is the one of ``address - 1``: the call itself. Of the inline chain
there, the line shown is the innermost one outside ``include/``: the ``.c`` line that
dropped, not the ``kfree_skb()`` wrapper in ``skbuff.h`` it went through. Module
locations are looked up in the module's own debug ``.ko`` when a tree of them is
given (see :class:`ModuleLines`), and left alone otherwise.

A vmlinux of another build would give confident wrong lines, so it must carry the
target's exact ``Linux version`` banner (``/proc/version``) before it is used.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from kdbg.errors import BadInput, KdbgError
from kdbg.symbols.dwarf import Dwarf, SourceLine, has_dwarf, read_section
from kdbg.symbols.evidence import kaslr_offset
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.symbols.sources import source_roots, tree_relative

# Where distributions install the debug vmlinux of a kernel (Debian/Ubuntu -dbg and
# -dbgsym packages, Fedora/RHEL debuginfo).
DEBUG_VMLINUX = (
    "/usr/lib/debug/boot/vmlinux-{release}",
    "/usr/lib/debug/lib/modules/{release}/vmlinux",
    "/boot/vmlinux-{release}",
)


def linux_banners(vmlinux: str | Path) -> list[str]:
    """The ``Linux version ...`` lines compiled into the image (from ``.rodata``; 6.1
    has two, one without the build number)."""
    data = read_section(vmlinux, ".rodata") or b""
    return [m.group().decode(errors="replace").strip()
            for m in re.finditer(rb"Linux version [^\n\0]{1,400}", data)]


def installed_module_debug(release: str) -> Path | None:
    """The running kernel's module debug files (Debian's -dbg layout), if installed."""
    path = Path(f"/usr/lib/debug/lib/modules/{release}/kernel")
    return path if path.is_dir() else None


def installed_vmlinux(release: str) -> Path | None:
    """The running kernel's debug vmlinux where the distribution puts it, if there."""
    for pattern in DEBUG_VMLINUX:
        path = Path(pattern.format(release=release))
        try:
            if path.is_file() and has_dwarf(path):
                return path
        except KdbgError:
            continue
    return None


def source_line(found: SourceLine, roots: tuple[str, ...] = ()) -> tuple[str, int | None]:
    """The innermost frame outside ``include/``, else the function's own frame, its file
    relative to the kernel tree (``roots``: :func:`kdbg.symbols.sources.source_roots`)."""
    for frame in found.frames:
        file = tree_relative(frame.file, roots) or frame.file
        if not file.startswith("include/"):
            return file, frame.line
    last = found.function_frame
    return tree_relative(last.file, roots) or last.file, last.line


# objdump -t: "00000000000000d0 g     F .text\t00000000000005d7 nft_do_chain"
# (value, 7 flag characters of which the last is F for a function, section, size, name)
_OBJDUMP_FUNC = re.compile(
    r"^(?P<value>[0-9a-f]+) .{6}F (?P<section>\S+)\t[0-9a-f]+ (?P<name>\S+)$", re.M)


@functools.cache
def module_files(root: Path) -> dict[str, Path]:
    """Debug ``.ko`` files under ``root`` by module name (as kallsyms spells it: ``-``
    becomes ``_``). Walked once per root and process."""
    return {p.name.removesuffix(".ko").replace("-", "_"): p for p in root.rglob("*.ko")}


@dataclasses.dataclass(frozen=True)
class ModuleDebug:
    """A loaded module's debug file and where the target put its sections."""

    name: str
    path: Path
    sections: tuple[tuple[str, int], ...]  # (".text", 0xffffffffc0370000), ...

    def gdb_command(self) -> str:
        """``add-symbol-file`` with every section at its load address, but the ``.init*``
        ones: the kernel frees them once the module's init has run and puts later
        modules there (on 6.1, nf_tables' ``.init.text`` is where nft_compat's ``.text``
        is now), so gdb would name those modules' code after this one's init."""
        text = dict(self.sections)[".text"]  # lab_modules keeps only modules with one
        others = " ".join(f"-s {name} 0x{addr:x}" for name, addr in self.sections
                          if name != ".text" and not name.startswith(".init"))
        return f"add-symbol-file {self.path} 0x{text:x} {others}".rstrip()


class ModuleLines:
    """file:line in modules, from a tree of their debug ``.ko`` files (Debian's -dbg
    package has them under ``/usr/lib/debug/lib/modules/<release>/kernel``).

    A module's location is ``symbol+offset``; the symbol's value in the ``.ko`` is an
    offset in its section, so addr2line is asked for that offset within that section.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files = module_files(root)
        self._symbols: dict[str, dict[str, tuple[str, int]]] = {}
        self._dwarfs: dict[tuple[str, str], Dwarf] = {}

    def __contains__(self, module: str) -> bool:
        return module in self._files

    def _symtab(self, module: str) -> dict[str, tuple[str, int]]:
        """name -> (section, value) of the module's functions (``objdump -t``)."""
        if module not in self._symbols:
            out = subprocess.run(["objdump", "-t", str(self._files[module])],
                                 capture_output=True, text=True, check=False).stdout
            table: dict[str, tuple[str, int]] = {}
            for m in _OBJDUMP_FUNC.finditer(out):
                table[m["name"]] = (m["section"], int(m["value"], 16))
            self._symbols[module] = table
        return self._symbols[module]

    def line(self, module: str, symbol: str, offset: int) -> SourceLine | None:
        """The source line of ``symbol+offset - 1`` in ``module`` (a return address)."""
        found = self._symtab(module).get(symbol)
        if found is None:
            return None
        section, value = found
        key = (module, section)
        if key not in self._dwarfs:
            self._dwarfs[key] = Dwarf(self._files[module], section=section)
        return self._dwarfs[key].line(value + offset - 1)

    def close(self) -> None:
        for dwarf in self._dwarfs.values():
            dwarf.close()


class Located(Protocol):
    """A frozen dataclass naming a kernel address (in practice
    :class:`kdbg.trace.event.DropEvent`, which this room does not import)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def address(self) -> int: ...
    @property
    def symbol(self) -> str | None: ...
    @property
    def offset(self) -> int: ...
    @property
    def module(self) -> str | None: ...


E = TypeVar("E", bound=Located)


class DropLines:
    """Adds ``file`` and ``line`` to drop events in the kernel's own text.

    ``kallsyms`` gives the target's symbols (for the KASLR offset) when first needed;
    ``version`` is the target's ``/proc/version`` (None: unknown, the caller vouches
    for the vmlinux). Raises BadInput for a vmlinux that is missing, has no DWARF, or
    is not the target's build.
    """

    def __init__(self, vmlinux: str | Path, kallsyms: Callable[[], Kallsyms],
                 version: str | None, modules: Path | None = None) -> None:
        self.vmlinux = Path(vmlinux)
        self.modules = ModuleLines(modules) if modules and modules.is_dir() else None
        if not self.vmlinux.is_file():
            raise BadInput(f"no vmlinux at {self.vmlinux}")
        if not has_dwarf(self.vmlinux):
            raise BadInput(f"{self.vmlinux} has no DWARF (.debug_info), so no file:line",
                           hint="the -dbg package's vmlinux, or a CONFIG_DEBUG_INFO build")
        banners = linux_banners(self.vmlinux)
        if version is not None and version.strip() not in banners:
            ours = banners[-1].split()[2] if banners else "unknown"
            theirs = version.split()[2] if len(version.split()) > 2 else version.strip()
            what = f"a different build of {ours}" if ours == theirs else ours
            raise BadInput(f"{self.vmlinux} is not the target's kernel: it is {what}, "
                           f"the target runs {theirs}")
        self.roots = source_roots(self.vmlinux)
        self._kallsyms = functools.cache(kallsyms)  # parsed once, for the offset and warm()
        self._dwarf: Dwarf | None = None
        self.error: str | None = None

    def _lookup(self) -> Dwarf:
        if self._dwarf is None:
            offset = kaslr_offset(self._kallsyms(), self.vmlinux)
            self._dwarf = Dwarf(self.vmlinux, kaslr_offset=offset)
        return self._dwarf

    def warm(self) -> None:
        """Start addr2line and load its tables now (a first answer takes 0.2 s), so the
        first drop is not the one that waits."""
        try:
            dwarf = self._lookup()
            dwarf.line(self._kallsyms().symbol("_stext").address)
        except KdbgError as err:
            self.error = str(err)

    def annotate(self, event: E) -> E:
        """The event with file:line where DWARF knows it; unchanged otherwise."""
        if self.error is not None or event.symbol is None:
            return event
        try:
            if event.module is None:
                found = self._lookup().line(event.address - 1)
            elif self.modules is not None and event.module in self.modules:
                found = self.modules.line(event.module, event.symbol, event.offset)
            else:
                return event
        except KdbgError as err:
            self.error = str(err)  # one failure ends the lookups; the caller may say so
            return event
        if found is None:
            return event
        file, line = source_line(found, self.roots)
        return dataclasses.replace(event, file=file, line=line)

    def close(self) -> None:
        if self._dwarf is not None:
            self._dwarf.close()
        if self.modules is not None:
            self.modules.close()
