"""Turning ``--lab NAME`` or ``--gdb ENDPOINT`` into the :class:`Target` a session attaches to.

A lab knows its endpoint, the netns gdb must run in (KGDBoE) and how to interrupt
kgdboc (SysRq-G through the exec channel); every fact read from its guest (kallsyms,
modules and their debug files, the debug vmlinux, the guard's evidence) is owned by
the target's one :class:`kdbg.targetfacts.LabFacts`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.model import KernelTree
from kdbg.errors import BadInput, KdbgError
from kdbg.lab import guest, kernel_source, registry
from kdbg.lab.kernel import quiet
from kdbg.symbols.droplines import ModuleDebug, module_files
from kdbg.symbols.evidence import TargetSymbols
from kdbg.targetfacts import LabFacts
from kdbg.transports import Interrupt, by_name


@dataclass(frozen=True)
class Target:
    """Everything :meth:`kdbg.debugger.Session.connect` takes about one target."""

    endpoint: Endpoint
    label: str = ""
    lab: str | None = None  # the lab's name, when the target is one
    kallsyms: Path | None = None
    vmlinux: Path | None = None
    kaslr_offset: int | None = None
    gdb_prefix: tuple[str, ...] = ()
    interrupter: Callable[[], None] | None = field(default=None, compare=False)
    modules: tuple[ModuleDebug, ...] = ()  # debug files of loaded modules, for gdb
    stopped: bool = False  # a lab guest found halted (a debugger died): facts are kept ones
    facts: LabFacts | None = field(default=None, compare=False)  # a lab's, read once
    tree: KernelTree = KernelTree()  # the kernel's own source and gdb scripts

    def guard_symbols(self) -> TargetSymbols | None:
        """What the guard should know about this target: for a lab, everything the
        guest shows (live kallsyms, BTF, kprobe blocklist, modules.order) and the
        DWARF vmlinux; otherwise None (the session builds it from kallsyms)."""
        if self.facts is None:
            return None
        return self.facts.symbols(vmlinux=self.vmlinux)

    def debug_root(self) -> Path | None:
        """Where a lab's module debug files are (None without a vmlinux, or not a lab)."""
        if self.facts is None or self.vmlinux is None:
            return None
        return self.facts.debug_root()


def from_endpoint(
    endpoint: str, *, kallsyms: str | Path | None = None, vmlinux: str | Path | None = None,
    source: str | Path | None = None,
) -> Target:
    """A target given by hand: an endpoint, and the target's kallsyms and/or vmlinux, and
    the tree its kernel was built from (``source``: gdb shows its lines, and its
    vmlinux-gdb.py gives Linux's gdb helpers)."""
    ep = Endpoint.parse(endpoint)
    tree = KernelTree()
    if source is not None:
        if not Path(source).is_dir():
            raise BadInput(f"kernel source {source} is not a directory")
        tree = KernelTree.of(Path(source).resolve())
    return Target(
        ep,
        kallsyms=Path(kallsyms) if kallsyms else None,
        vmlinux=Path(vmlinux) if vmlinux else None,
        label=str(ep),
        tree=tree,
    )


def from_lab(
    name: str = "default",
    *,
    vmlinux: str | Path | None = None,
    want_vmlinux: bool = True,
    want_source: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Target:
    """The target of a running lab: endpoint, guest kallsyms, vmlinux, netns, interrupter,
    and its kernel's own source and gdb scripts (fetched once; see
    :func:`kdbg.lab.kernel_source`).

    The vmlinux is the lab's (or ``vmlinux``); with ``want_vmlinux=False`` none is used,
    with ``want_source=False`` no source (and no Linux gdb helpers).
    """
    info = registry.require(name)
    facts = LabFacts(name)
    vm_path: Path | None = Path(vmlinux) if vmlinux else None
    if vm_path is None and want_vmlinux:
        try:
            vm_path = facts.vmlinux(progress)
        except KdbgError:
            vm_path = None
    if vm_path is not None and not vm_path.exists():
        raise BadInput(f"vmlinux {vm_path} does not exist")
    interrupter = None
    if by_name(info.transport).interrupt is Interrupt.SYSRQ_G:
        interrupter = _sysrq_g(name)
    endpoint = info.gdb_endpoint  # serial:PATH for kgdboc, so the guard judges kgdb
    modules: tuple[ModuleDebug, ...] = ()
    root = facts.debug_root() if vm_path is not None else None
    if root is not None:
        modules = lab_modules(facts, root)
    tree = (lab_tree(name, facts, progress) if want_source and vm_path is not None
            else KernelTree())
    return Target(
        Endpoint.parse(endpoint),
        kallsyms=facts.kallsyms_file,
        vmlinux=vm_path,
        gdb_prefix=tuple(info.gdb_prefix),
        interrupter=interrupter,
        label=f"lab {name} ({info.transport}, {info.release})",
        lab=name,
        modules=modules,
        stopped=not facts.running,
        facts=facts,
        tree=tree,
    )


def lab_tree(name: str, facts: LabFacts, progress: Callable[[str], None] | None
             ) -> KernelTree:
    """Lab ``name``'s kernel source and gdb scripts, for the kernel the guest runs (its
    /proc/version, from ``facts``), fetched into the cache the first time (``kdbg lab
    up`` prepares them while the lab boots); what cannot be had is said in the tree's
    ``note``, and the session goes on without it."""
    try:
        src = kernel_source(name, progress=progress or quiet, running=facts.version())
    except KdbgError as err:
        return KernelTree(note=f"no kernel source: {err}")
    return KernelTree(tuple(src.dirs), src.gdb_scripts, src.note)


def lab_modules(facts: LabFacts, root: Path,
                only: Collection[str] | None = None) -> tuple[ModuleDebug, ...]:
    """The lab's loaded modules that have a debug file under ``root`` (of those named in
    ``only``, if given), with the section addresses the guest shows in
    ``/sys/module/*/sections`` (read through ``facts``)."""
    files = module_files(root)
    if only is not None:
        only = set(only) & set(files)
        if not only:
            return ()
    listing = facts.module_sections(only)
    loaded: dict[str, list[tuple[str, int]]] = {}
    for line in listing.splitlines():
        # /sys/module/nf_tables/sections/.text:0xffffffffc0370000
        path, _, value = line.partition(":")
        parts = path.split("/")
        if len(parts) != 6 or not value.startswith("0x") or parts[3] not in files:
            continue
        loaded.setdefault(parts[3], []).append((parts[5], int(value, 16)))
    return tuple(ModuleDebug(m, files[m], tuple(sorted(secs))) for m, secs in
                 sorted(loaded.items()) if any(s == ".text" for s, _ in secs))


def _sysrq_g(name: str) -> Callable[[], None]:
    """SysRq-G in lab ``name``: the write blocks while kgdb holds the kernel, so it runs in
    a daemon thread and is never waited for."""

    def interrupt() -> None:
        def fire() -> None:
            with contextlib.suppress(KdbgError):
                guest.run(name, ["sh", "-c", "echo g > /proc/sysrq-trigger"], timeout=None)

        threading.Thread(target=fire, name="kdbg-sysrq-g", daemon=True).start()

    return interrupt
