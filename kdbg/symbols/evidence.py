"""Everything kdbg knows about one target kernel's symbols, in one object.

A target is the local kernel, a lab guest, or a bare vmlinux. Its facts come
from the target itself: kallsyms (runtime addresses, ``[module]`` tags, section
markers), BTF (function prototypes), a vmlinux with DWARF (file:line), the KASLR
offset between the two, the kprobe blocklist when debugfs shows it, and the
module paths from ``modules.order``. Whatever is missing is ``None`` and the
reason is kept in :attr:`TargetSymbols.missing`, so the guard can say which
evidence it could not consult.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from kdbg.errors import (
    BadInput,
    BtfError,
    KdbgError,
    ProbeUnavailable,
    UnknownSymbol,
)
from kdbg.symbols.btf import Btf
from kdbg.symbols.dwarf import Dwarf, elf_sections, has_dwarf, nm_text, read_section
from kdbg.symbols.kallsyms import Kallsyms

BLOCKLIST_PATH = Path("/sys/kernel/debug/kprobes/blacklist")

# Section markers the kernel's linker script puts into kallsyms. Each pair
# bounds a text section; which of them matter, and why, is the guard's policy.
SECTION_MARKERS: tuple[tuple[str, str, str], ...] = (
    ("entry", "__entry_text_start", "__entry_text_end"),
    ("irqentry", "__irqentry_text_start", "__irqentry_text_end"),
    ("softirqentry", "__softirqentry_text_start", "__softirqentry_text_end"),
    ("noinstr", "__noinstr_text_start", "__noinstr_text_end"),
    ("cpuidle", "__cpuidle_text_start", "__cpuidle_text_end"),
    ("kprobes", "__kprobes_text_start", "__kprobes_text_end"),
    ("sched", "__sched_text_start", "__sched_text_end"),
    ("lock", "__lock_text_start", "__lock_text_end"),
)


class BlockedRange(NamedTuple):
    """One line of the kprobe blocklist: ``[start, end)`` and the symbol it covers."""

    start: int
    end: int
    symbol: str

    def __str__(self) -> str:
        return f"0x{self.start:x}-0x{self.end:x} {self.symbol}"


class Blocklist:
    """The kprobe blocklist (``/sys/kernel/debug/kprobes/blacklist``), which kgdb honours."""

    def __init__(self, ranges: list[BlockedRange]) -> None:
        self.ranges = sorted(ranges, key=lambda r: r.start)
        self._starts = [r.start for r in self.ranges]

    @classmethod
    def parse(cls, text: str) -> Blocklist:
        """Parse ``0xSTART-0xEND\\tSYMBOL [MODULE]`` lines; zeroed addresses are refused."""
        ranges = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            span, _, rest = line.partition("\t") if "\t" in line else line.partition(" ")
            start_s, dash, end_s = span.strip().partition("-")
            try:
                start, end = int(start_s, 16), int(end_s, 16)
            except ValueError:
                raise BadInput(f"kprobe blocklist line {lineno}: cannot parse {line!r}") from None
            if not dash or end < start:
                raise BadInput(f"kprobe blocklist line {lineno}: bad range {span!r}")
            ranges.append(BlockedRange(start, end, rest.strip()))
        if ranges and all(r.start == 0 for r in ranges):
            raise ProbeUnavailable("the kprobe blocklist shows every address as zero",
                                   hint="read it as root, with kptr_restrict=0")
        return cls(ranges)

    def find(self, address: int) -> BlockedRange | None:
        """The blocked range holding ``address``, if any."""
        i = bisect.bisect_right(self._starts, address) - 1
        while i >= 0:
            r = self.ranges[i]
            if r.start <= address < r.end:
                return r
            if address - r.start > 1 << 20:  # ranges are functions; stop looking far back
                return None
            i -= 1
        return None

    def __len__(self) -> int:
        return len(self.ranges)


def module_paths(order_text: str) -> dict[str, str]:
    """``modules.order`` text → module name (as kallsyms shows it) → path in the tree."""
    out: dict[str, str] = {}
    for line in order_text.splitlines():
        path = line.strip()
        if not path:
            continue
        if path.startswith("kernel/"):
            path = path[len("kernel/"):]
        base = path.rsplit("/", 1)[-1]
        for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
            if base.endswith(ext):
                base = base[: -len(ext)]
                break
        out[base.replace("-", "_")] = path
    return out


def kaslr_offset(kallsyms: Kallsyms, vmlinux: str | Path) -> int:
    """Runtime − link-time address of the kernel text (``_stext`` vs the ELF ``.text``)."""
    text = elf_sections(vmlinux).get(".text")
    if text is None:
        raise BadInput(f"{vmlinux}: no .text section; is it a vmlinux?")
    for marker in ("_stext", "_text"):
        try:
            return kallsyms.symbol(marker).address - text.address
        except UnknownSymbol:
            continue
    raise BadInput("kallsyms has no _stext/_text; cannot compute the KASLR offset")


@dataclass
class TargetSymbols:
    """What is known about one target kernel's code, and what could not be read."""

    kallsyms: Kallsyms
    btf: Btf | None = None
    vmlinux: Path | None = None
    kaslr_offset: int = 0
    blocklist: Blocklist | None = None
    modules: Mapping[str, str] = field(default_factory=dict)
    name: str = "local"
    missing: dict[str, str] = field(default_factory=dict)
    _dwarf: Dwarf | None = field(default=None, init=False, repr=False)
    _dwarf_tried: bool = field(default=False, init=False, repr=False)
    _sections: dict[str, tuple[int, int]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.vmlinux is not None and not isinstance(self.vmlinux, Path):
            self.vmlinux = Path(self.vmlinux)
        for key, value, what in (("btf", self.btf, "no BTF given"),
                                 ("blocklist", self.blocklist, "no kprobe blocklist given"),
                                 ("dwarf", self.vmlinux, "no vmlinux with DWARF given")):
            if value is None:
                self.missing.setdefault(key, what)

    # -- construction -------------------------------------------------------

    @classmethod
    def local(cls, *, vmlinux: str | Path | None = None) -> TargetSymbols:
        """The running kernel: /proc/kallsyms, its BTF, debugfs blocklist, modules.order."""
        kallsyms = Kallsyms.load("/proc/kallsyms")
        missing: dict[str, str] = {}
        btf = _load_btf(Path("/sys/kernel/btf/vmlinux"), missing)
        blocklist = None
        try:
            blocklist = Blocklist.parse(BLOCKLIST_PATH.read_text())
        except FileNotFoundError:
            missing["blocklist"] = (f"{BLOCKLIST_PATH} is absent (kernel without CONFIG_KPROBES, "
                                    "or debugfs not mounted)")
        except (OSError, KdbgError) as err:
            missing["blocklist"] = f"{BLOCKLIST_PATH}: {err}"
        modules: dict[str, str] = {}
        order = Path("/lib/modules", os.uname().release, "modules.order")
        try:
            modules = module_paths(order.read_text())
        except OSError:
            missing["modules"] = f"{order} is absent: module symbols are judged by name"
        target = cls(kallsyms, btf=btf, blocklist=blocklist, modules=modules,
                     name="local", missing=missing)
        target._attach_vmlinux(vmlinux, None)
        return target

    @classmethod
    def from_parts(cls, kallsyms_text: str, btf_path: str | Path | None = None,
                   vmlinux: str | Path | None = None, kaslr_offset: int | None = 0,
                   blocklist_text: str | None = None, modules_order_text: str | None = None,
                   name: str = "target") -> TargetSymbols:
        """A target from copies of its files (a lab guest's, a saved set, a test's)."""
        missing: dict[str, str] = {}
        btf = _load_btf(Path(btf_path), missing) if btf_path else None
        if btf_path is None:
            missing["btf"] = "no BTF given"
        blocklist = Blocklist.parse(blocklist_text) if blocklist_text is not None else None
        if blocklist is None:
            missing["blocklist"] = "no kprobe blocklist given"
        modules = module_paths(modules_order_text) if modules_order_text else {}
        target = cls(Kallsyms.parse(kallsyms_text), btf=btf, blocklist=blocklist,
                     modules=modules, name=name, missing=missing)
        target._attach_vmlinux(vmlinux, kaslr_offset)
        return target

    @classmethod
    def from_vmlinux(cls, vmlinux: str | Path) -> TargetSymbols:
        """A kernel known only by its vmlinux: ELF symbols, its ``.BTF`` section, its DWARF."""
        path = Path(vmlinux)
        if not path.is_file():
            raise BadInput(f"no vmlinux at {path}")
        missing = {"blocklist": "a vmlinux alone has no kprobe blocklist",
                   "modules": "a vmlinux alone has no modules"}
        btf = None
        raw = read_section(path, ".BTF")
        if raw is None:
            missing["btf"] = f"{path} has no .BTF section"
        else:
            btf = Btf(raw, source=f"{path}:.BTF")
        target = cls(Kallsyms.parse(nm_text(path)), btf=btf, name=path.name, missing=missing)
        target._attach_vmlinux(path, 0)
        return target

    @classmethod
    def assemble(cls, kallsyms: Kallsyms, *, btf: Btf | None, blocklist: Blocklist | None,
                 modules: Mapping[str, str], name: str, missing: dict[str, str],
                 vmlinux: str | Path | None) -> TargetSymbols:
        """A target from facts read elsewhere (a lab's, by :mod:`kdbg.targetfacts.facts`),
        with the vmlinux's KASLR offset taken from ``kallsyms``."""
        target = cls(kallsyms, btf=btf, blocklist=blocklist, modules=modules, name=name,
                     missing=missing)
        target._attach_vmlinux(vmlinux, None)
        return target

    def use_kallsyms(self, kallsyms: Kallsyms) -> None:
        """Judge from ``kallsyms`` from now on (the target's modules changed)."""
        self.kallsyms = kallsyms
        self._sections = None

    def _attach_vmlinux(self, vmlinux: str | Path | None, offset: int | None) -> None:
        if vmlinux is None:
            self.missing.setdefault("dwarf", "no vmlinux with DWARF given")
            return
        self.vmlinux = Path(vmlinux)
        self.missing.pop("dwarf", None)
        if not self.vmlinux.is_file():
            raise BadInput(f"no vmlinux at {self.vmlinux}")
        self.kaslr_offset = kaslr_offset(self.kallsyms, self.vmlinux) if offset is None else offset
        if self.btf is None:
            raw = read_section(self.vmlinux, ".BTF")
            if raw is not None:
                self.btf = Btf(raw, source=f"{self.vmlinux}:.BTF")
                self.missing.pop("btf", None)

    # -- derived facts ------------------------------------------------------

    def dwarf(self) -> Dwarf | None:
        """The DWARF reader for this target's vmlinux, started on first use (None if none)."""
        if self._dwarf_tried:
            return self._dwarf
        self._dwarf_tried = True
        if self.vmlinux is None:
            return None
        if not has_dwarf(self.vmlinux):
            self.missing["dwarf"] = f"{self.vmlinux} has no DWARF"
            return None
        self._dwarf = Dwarf(self.vmlinux, kaslr_offset=self.kaslr_offset)
        with contextlib.suppress(UnknownSymbol):
            self._dwarf.learn_root(self.kallsyms.symbol("start_kernel").address)
        return self._dwarf

    def sections(self) -> dict[str, tuple[int, int]]:
        """Text sections bounded by kallsyms markers present in this kernel: name → range."""
        if self._sections is None:
            found: dict[str, tuple[int, int]] = {}
            for name, start, end in SECTION_MARKERS:
                try:
                    lo = self.kallsyms.symbol(start).address
                    hi = self.kallsyms.symbol(end).address
                except UnknownSymbol:
                    continue
                if lo < hi:
                    found[name] = (lo, hi)
            self._sections = found
        return self._sections

    def without_dwarf(self) -> TargetSymbols:
        """The same target with its DWARF set aside (to compare what the rest can tell)."""
        missing = dict(self.missing, dwarf="DWARF set aside")
        return TargetSymbols(self.kallsyms, btf=self.btf, vmlinux=None, kaslr_offset=0,
                             blocklist=self.blocklist, modules=self.modules, name=self.name,
                             missing=missing)

    def close(self) -> None:
        """Stop helper processes (addr2line)."""
        if self._dwarf is not None:
            self._dwarf.close()


def _load_btf(path: Path, missing: dict[str, str]) -> Btf | None:
    try:
        return Btf.load(path)
    except BtfError as err:
        missing["btf"] = str(err)
        return None
