"""Every fact kdbg reads from a lab target, read once and owned by one object.

A ``watch --break`` on a lab needs the guest's kallsyms (with its modules), the
loaded modules' section addresses and debug files, its BTF, the kprobe blocklist,
``modules.order``, ``/proc/version`` and the debug vmlinux. :class:`LabFacts` reads
each of them once per attach, through a :class:`FactSource` (the lab's exec channel in
:class:`GuestFacts`), and keeps it. Facts that move with the modules (kallsyms, module
sections, the blocklist) are read again only after :meth:`LabFacts.refresh` saw the
module list change. A guest found halted (issue 16) answers from the copies the source
kept for this boot: kdbg never needs the exec channel while the target is stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kdbg.errors import KdbgError, LabError
from kdbg.lab import guest, registry
from kdbg.symbols.btf import Btf
from kdbg.symbols.evidence import BLOCKLIST_PATH, Blocklist, TargetSymbols, module_paths
from kdbg.symbols.kallsyms import Kallsyms

VERSION_PATH = "/proc/version"
BTF_PATH = "/sys/kernel/btf/vmlinux"


class FactSource(Protocol):
    """Where a lab's facts come from (the guest's exec channel, or a test's fake)."""

    name: str

    def is_running(self) -> bool: ...
    def release(self) -> str: ...
    def kallsyms_files(self, *, running: bool) -> tuple[Path, Path]: ...
    def module_sections(self, copy: Path, only: Collection[str] | None, *,
                        running: bool) -> str: ...
    def read_fact(self, path: str, *, running: bool, variant: str) -> bytes | None: ...
    def module_debug(self) -> Path | None: ...
    def vmlinux(self, progress: Callable[[str], None] | None) -> Path: ...


@dataclass
class GuestFacts:
    """A lab guest's facts through :mod:`kdbg.lab.guest` (its exec channel, and the
    copies it keeps per boot for a halted guest)."""

    name: str

    def is_running(self) -> bool:
        return guest.is_running(self.name)

    def release(self) -> str:
        return registry.require(self.name).release

    def kallsyms_files(self, *, running: bool) -> tuple[Path, Path]:
        return guest.kallsyms_files(self.name, running=running)

    def module_sections(self, copy: Path, only: Collection[str] | None, *,
                        running: bool) -> str:
        return guest.module_sections(self.name, only, running=running, copy=copy)

    def read_fact(self, path: str, *, running: bool, variant: str) -> bytes | None:
        return guest.read_fact(self.name, path, running=running, variant=variant)

    def module_debug(self) -> Path | None:
        return guest.module_debug(self.name)

    def vmlinux(self, progress: Callable[[str], None] | None) -> Path:
        return guest.vmlinux(self.name, progress)


_UNSET = object()


class LabFacts:
    """The facts of one lab target for one attach: each read once, kept, and the ones
    that move with modules read again after :meth:`refresh` saw them move."""

    def __init__(self, name: str, source: FactSource | None = None, *,
                 running: bool | None = None) -> None:
        self.name = name
        self.source: FactSource = source if source is not None else GuestFacts(name)
        # A guest halted by a debugger that died cannot answer: then the facts kept
        # for this boot stand in, and the session resumes the guest when it ends.
        self.running = self.source.is_running() if running is None else running
        self._copy, self._modules_file = self.source.kallsyms_files(running=self.running)
        self._kallsyms: Kallsyms | None = None
        self._facts: dict[tuple[str, str], bytes | None] = {}
        self._halted_without: set[str] = set()
        self._sections: dict[frozenset[str] | None, str] = {}
        self._release: str | None = None
        self._debug_root: object = _UNSET
        self._vmlinux: dict[bool, Path | KdbgError] = {}
        self._symbols: TargetSymbols | None = None

    # -- kallsyms and modules: follow the module list ------------------------

    @property
    def kallsyms_file(self) -> Path:
        """The copy of the guest's kallsyms for the current module list."""
        return self._copy

    @property
    def modules_file(self) -> Path:
        """The copy of the guest's ``/proc/modules`` that list was read from."""
        return self._modules_file

    def kallsyms(self) -> Kallsyms:
        """The guest's kallsyms, module-aware (parsed once per module list)."""
        if self._kallsyms is None:
            self._kallsyms = Kallsyms.load(self._copy)
        return self._kallsyms

    def refresh(self) -> bool:
        """Look at the guest's module list again (one read of ``/proc/modules`` while
        nothing moved; the guest must run); True when it changed. Then kallsyms, the
        module sections, the blocklist and the guard's symbols are read afresh."""
        self.running = True
        copy, modules_file = self.source.kallsyms_files(running=True)
        if copy == self._copy:
            return False
        self._copy, self._modules_file = copy, modules_file
        self._kallsyms = None
        self._sections.clear()
        if self._symbols is not None:
            self._symbols.use_kallsyms(self.kallsyms())
            self._symbols.blocklist, problem = self._blocklist()
            self._symbols.missing.pop("blocklist", None)
            if problem:
                self._symbols.missing["blocklist"] = problem
        return True

    def module_sections(self, only: Collection[str] | None = None) -> str:
        """``/sys/module/*/sections`` of the loaded modules (of those in ``only``)."""
        key = frozenset(only) if only is not None else None
        if key not in self._sections:
            self._sections[key] = self.source.module_sections(self._copy, only,
                                                              running=self.running)
        return self._sections[key]

    # -- facts fixed for the boot ------------------------------------------

    def release(self) -> str:
        if self._release is None:
            self._release = self.source.release()
        return self._release

    def debug_root(self) -> Path | None:
        """Where the debug ``.ko`` files of the guest's modules are, if anywhere."""
        if self._debug_root is _UNSET:
            self._debug_root = self.source.module_debug()
        return self._debug_root if isinstance(self._debug_root, Path) else None

    def vmlinux(self, progress: Callable[[str], None] | None = None) -> Path:
        """The guest kernel's DWARF vmlinux (fetched once); KdbgError if there is none."""
        if True not in self._vmlinux:
            try:
                self._vmlinux[True] = self.source.vmlinux(progress)
            except KdbgError as err:
                self._vmlinux[True] = err
        found = self._vmlinux[True]
        if isinstance(found, KdbgError):
            raise found
        return found

    def fact(self, path: str, variant: str = "") -> bytes | None:
        """The bytes of ``path`` in the guest (None if unreadable), read once. A halted
        guest answers from the copy kept for this boot; with none, LabError."""
        key = (path, variant)
        if key not in self._facts:
            self._facts[key] = self.source.read_fact(path, running=self.running,
                                                     variant=variant)
        return self._facts[key]

    def version(self) -> str | None:
        """The guest's ``/proc/version``."""
        return (self.fact(VERSION_PATH) or b"").decode() or None

    # -- what the guard knows -------------------------------------------------

    def symbols(self, vmlinux: str | Path | None = None) -> TargetSymbols:
        """Everything the guard should know about this guest (kallsyms as now, BTF,
        kprobe blocklist, modules.order) and the DWARF vmlinux; built once."""
        if self._symbols is not None:
            return self._symbols
        missing: dict[str, str] = {}
        btf = None
        btf_raw = self._kept(BTF_PATH)
        if btf_raw:
            btf = Btf(btf_raw, source=f"lab {self.name}:{BTF_PATH}")
        else:
            missing["btf"] = self._absent(BTF_PATH, f"lab {self.name} shows no {BTF_PATH}")
        blocklist, problem = self._blocklist()
        if problem:
            missing["blocklist"] = problem
        order_path = f"/lib/modules/{self.release()}/modules.order"
        order = self._kept(order_path)
        if not order:
            missing["modules"] = self._absent(order_path, f"lab {self.name}: no modules.order")
        if vmlinux is None:
            try:
                vmlinux = self.vmlinux()
            except KdbgError as err:
                missing["dwarf"] = str(err)
        self._symbols = TargetSymbols.assemble(
            self.kallsyms(), btf=btf, blocklist=blocklist,
            modules=module_paths(order.decode()) if order else {},
            name=f"lab {self.name}", missing=missing, vmlinux=vmlinux)
        return self._symbols

    def _blocklist(self) -> tuple[Blocklist | None, str | None]:
        """The kprobe blocklist for the current module list, or why there is none."""
        path = str(BLOCKLIST_PATH)
        raw = self._kept(path, variant=self._copy.name)  # it moves with the modules
        if raw is None:
            return None, self._absent(path, f"lab {self.name}: {BLOCKLIST_PATH} unreadable")
        try:
            return Blocklist.parse(raw.decode()), None
        except KdbgError as err:
            return None, f"lab {self.name}: {err}"

    def _kept(self, path: str, variant: str = "") -> bytes | None:
        try:
            return self.fact(path, variant)
        except LabError:  # halted, and never read before: that evidence is missing
            self._halted_without.add(path)
            return None

    def _absent(self, path: str, otherwise: str) -> str:
        if path in self._halted_without:
            return f"lab {self.name} is halted and kdbg kept no copy of its {path}"
        return otherwise
