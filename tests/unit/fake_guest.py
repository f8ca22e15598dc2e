"""A lab guest's facts without a lab: a :class:`kdbg.targetfacts.FactSource` that serves
copies a test writes, and counts every read (one read per fact per attach)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path

from kdbg.errors import LabError

CORE = "ffffffff81000000 T _text\nffffffff81000000 T _stext\nffffffff81400000 T _etext\n"


def kallsyms_copy(tmp: Path, name: str, modules: dict[str, int]) -> Path:
    """A kallsyms copy and its module list: each module one function at its base."""
    text = CORE + "".join(f"{base:x} t {mod}_fn\t[{mod}]\n" for mod, base in modules.items())
    mods = "".join(f"{mod} 65536 0 - Live 0x{base:x}\n" for mod, base in modules.items())
    (tmp / f"{name}.txt").write_text(text)
    (tmp / f"{name}.modules").write_text(mods)
    return tmp / f"{name}.txt"


class FakeGuest:
    """``copy`` is the kallsyms copy of the module list now; ``sections`` the modules'
    ``.text`` addresses; ``files`` the guest's other files. ``reads`` counts reads."""

    name = "lab"

    def __init__(self, copy: Path | None = None, *, running: bool = True,
                 debug_root: Path | None = None, vmlinux: Path | None = None) -> None:
        self.copy = copy
        self.sections: dict[str, int] = {}
        self.files: dict[str, bytes] = {}
        self.running = running
        self.debug_root = debug_root
        self.vmlinux_path = vmlinux
        self.reads: Counter[str] = Counter()

    def is_running(self) -> bool:
        self.reads["ping"] += 1
        return self.running

    def release(self) -> str:
        self.reads["release"] += 1
        return "6.1.0-test-amd64"

    def kallsyms_files(self, *, running: bool) -> tuple[Path, Path]:
        self.reads["/proc/modules"] += 1
        assert self.copy is not None
        return self.copy, self.copy.with_suffix(".modules")

    def module_sections(self, copy: Path, only: Collection[str] | None, *,
                        running: bool) -> str:
        self.reads["sections"] += 1
        return "".join(f"/sys/module/{m}/sections/.text:0x{base:x}\n"
                       for m, base in self.sections.items() if only is None or m in only)

    def read_fact(self, path: str, *, running: bool, variant: str) -> bytes | None:
        self.reads[path] += 1
        if not running and path not in self.files:
            raise LabError(f"stopped, no copy of {path}")
        return self.files.get(path)

    def module_debug(self) -> Path | None:
        self.reads["module_debug"] += 1
        return self.debug_root

    def vmlinux(self, progress: Callable[[str], None] | None) -> Path:
        self.reads["vmlinux"] += 1
        if self.vmlinux_path is None:
            raise LabError("no vmlinux with debug info known for lab 'lab'")
        return self.vmlinux_path
