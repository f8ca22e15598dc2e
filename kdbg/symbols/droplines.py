"""file:line for drop locations, from the target's vmlinux when it carries DWARF.

A drop's location is the return address of the call to the drop function, so the
line asked for is the one of ``address - 1``: the call itself. Of the inline chain
there, the line shown is the innermost one outside ``include/``: the ``.c`` line that
dropped, not the ``kfree_skb()`` wrapper in ``skbuff.h`` it went through. Module
addresses are left alone (their DWARF is in the module's own debug file).

A vmlinux of another build would give confident wrong lines, so it must carry the
target's exact ``Linux version`` banner (``/proc/version``) before it is used.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

from kdbg.errors import BadInput, KdbgError
from kdbg.symbols.dwarf import Dwarf, SourceLine, has_dwarf, read_section
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.trace.event import DropEvent

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


def source_line(found: SourceLine) -> tuple[str, int | None]:
    """The innermost frame outside ``include/``, else the function's own frame."""
    for frame in found.frames:
        if not frame.file.startswith("include/"):
            return frame.file, frame.line
    return found.function_frame.file, found.function_frame.line


class DropLines:
    """Adds ``file`` and ``line`` to drop events in the kernel's own text.

    ``kallsyms`` gives the target's symbols (for the KASLR offset) when first needed;
    ``version`` is the target's ``/proc/version`` (None: unknown, the caller vouches
    for the vmlinux). Raises BadInput for a vmlinux that is missing, has no DWARF, or
    is not the target's build.
    """

    def __init__(self, vmlinux: str | Path, kallsyms: Callable[[], Kallsyms],
                 version: str | None) -> None:
        self.vmlinux = Path(vmlinux)
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
        self._kallsyms = kallsyms
        self._dwarf: Dwarf | None = None
        self.error: str | None = None

    def _lookup(self) -> Dwarf:
        if self._dwarf is None:
            from kdbg.symbols.target import kaslr_offset

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

    def annotate(self, event: DropEvent) -> DropEvent:
        """The event with file:line where DWARF knows it; unchanged otherwise."""
        if self.error is not None or event.module is not None or event.symbol is None:
            return event
        try:
            found = self._lookup().line(event.address - 1)
        except KdbgError as err:
            self.error = str(err)  # one failure ends the lookups; the caller may say so
            return event
        if found is None:
            return event
        file, line = source_line(found)
        return dataclasses.replace(event, file=file, line=line)

    def close(self) -> None:
        if self._dwarf is not None:
            self._dwarf.close()
