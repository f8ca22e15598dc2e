"""The kinds of lab kernel, one row each in :data:`KINDS`: Debian's (``debian``,
``debian:SERIES``, ``debian:RELEASE``), the kgdb lab kernel (``built``) and a user's
tree or bzImage (``PATH``).

A row knows how ``--kernel`` writes its kind (and the help text for it), how to
resolve a spec to a :class:`~kdbg.lab.kernel.Kernel` (fetching it into the cache if
the kind fetches), what a dry run shows (the kernel's path, nothing fetched), what
``kdbg lab kernels`` lists, where a lab of the kind finds its debug vmlinux and its
modules' debug files, and where its kernel's source and Linux's gdb scripts are
(:class:`~kdbg.lab.source.KernelSource`). ``kdbg lab up``, its dry run, the guest lookups and the
listing all go through this table; nothing else tells the kinds apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdbg.errors import BadInput
from kdbg.lab import debian
from kdbg.lab.build import cached_build
from kdbg.lab.debsource import debian_source
from kdbg.lab.kernel import (
    Kernel,
    KernelChoice,
    Listing,
    Progress,
    build_tree_of,
    kernel_from_path,
    quiet,
)
from kdbg.lab.source import KernelSource, tree_source


@dataclass(frozen=True)
class KernelKind:
    """One kind of lab kernel.

    ``forms`` are the ways ``--kernel`` writes it (as docs/lab.md's table does);
    ``help`` the phrases of ``--kernel``'s help text for it; ``records`` the
    :attr:`Kernel.kind <kdbg.lab.kernel.Kernel.kind>` values its kernels carry into a
    lab's record, whose guest lookups this row answers; ``fetches_vmlinux`` whether
    ``kdbg lab up`` fetches the debug vmlinux (in the background, while the lab boots).
    """

    name: str
    forms: tuple[str, ...]
    help: tuple[str, ...]
    records: tuple[str, ...] = ()
    fetches_vmlinux: bool = False

    def accepts(self, spec: str) -> bool:
        """Whether ``spec`` names this kind; BadInput when it does but is malformed."""
        raise NotImplementedError

    def resolve(self, spec: str, progress: Progress = quiet) -> Kernel:
        """The kernel ``spec`` names, fetched into the cache first if this kind fetches.
        Raises BadInput."""
        raise NotImplementedError

    def planned(self, spec: str) -> Kernel:
        """The kernel as ``kdbg lab up --dry-run`` shows it: its paths, nothing fetched."""
        return self.resolve(spec)

    def listing(self) -> Listing:
        """What ``kdbg lab kernels`` lists for this kind."""
        return Listing()

    def debug_vmlinux(self, release: str, progress: Progress = quiet) -> Path | None:
        """The DWARF vmlinux of a lab of this kind whose record names none (fetched
        if this kind fetches it), or None when there is no way to get one."""
        return None

    def module_debug(self, release: str, vmlinux: str | None) -> Path | None:
        """Where the debug ``.ko`` files of a lab's modules are (``vmlinux`` is the one
        its record names), or None."""
        return None

    def source(self, kernel: Kernel, running: str | None, *, progress: Progress = quiet,
               fetch: bool = True) -> KernelSource:
        """Where ``kernel``'s source and Linux's gdb scripts are; ``running`` is its
        version string (the guest's ``/proc/version``, or the bzImage's before boot).
        ``fetch``: get them into the cache first if this kind fetches them (without, the
        note says what a fetch would do). The default is a build tree's own (the tree
        the image was built in), or a note for a bzImage alone."""
        return tree_source(kernel.kdir or build_tree_of(kernel.image), kernel.image, running)


class DebianKind(KernelKind):
    """Debian's kernels: apt-get download into the cache, the -dbg package for DWARF."""

    def accepts(self, spec: str) -> bool:
        return debian.parse_debian_spec(spec) is not None

    def resolve(self, spec: str, progress: Progress = quiet) -> Kernel:
        return debian.debian_kernel(progress, self._release(spec))

    def planned(self, spec: str) -> Kernel:
        return debian.planned_kernel(self._release(spec))

    def listing(self) -> Listing:
        return debian.listing()

    def debug_vmlinux(self, release: str, progress: Progress = quiet) -> Path | None:
        return debian.debian_vmlinux(release, progress)

    def module_debug(self, release: str, vmlinux: str | None) -> Path | None:
        return debian.debian_module_debug(release)

    def source(self, kernel: Kernel, running: str | None, *, progress: Progress = quiet,
               fetch: bool = True) -> KernelSource:
        # The linux-source package of exactly the running kernel's package version.
        return debian_source(kernel.release, running, debian.debian_config(kernel.release),
                             progress=progress, fetch=fetch)

    @staticmethod
    def _release(spec: str) -> str:
        parsed = debian.parse_debian_spec(spec)
        assert parsed is not None  # accepts() said so
        return debian.resolve_debian(parsed)


class BuiltKind(KernelKind):
    """The kgdb lab kernel that ``kdbg lab build-kernel`` left in the cache. It is a
    build tree, so its labs record ``build`` and the tree's row answers their lookups."""

    def accepts(self, spec: str) -> bool:
        return spec == self.name

    def resolve(self, spec: str, progress: Progress = quiet) -> Kernel:
        kernel = cached_build()
        if kernel is None:
            raise BadInput("no kgdb lab kernel built yet", hint="kdbg lab build-kernel")
        return kernel

    def listing(self) -> Listing:
        built = cached_build()
        return Listing([KernelChoice(self.name, built.release if built else None,
                                     "the kgdb lab kernel (kdbg lab build-kernel)",
                                     built is not None,
                                     built is not None and built.vmlinux is not None,
                                     uncached="build")])


class PathKind(KernelKind):
    """A kernel the user names by path: a build tree (its vmlinux and modules beside
    it) or a bzImage alone. Every spec no other row takes is a path."""

    def accepts(self, spec: str) -> bool:
        return True

    def resolve(self, spec: str, progress: Progress = quiet) -> Kernel:
        return kernel_from_path(Path(spec))

    def module_debug(self, release: str, vmlinux: str | None) -> Path | None:
        # A build tree's vmlinux sits at its top, above the modules' .ko files; a lab
        # of a bzImage alone records no vmlinux.
        return Path(vmlinux).parent if vmlinux else None


KINDS: tuple[KernelKind, ...] = (
    DebianKind("debian", forms=("debian", "debian:SERIES", "debian:RELEASE"),
               help=("'debian' (stock 6.1 kernel)",
                     "'debian:SERIES' (Debian's newest, like debian:6.12)"),
               records=("debian",), fetches_vmlinux=True),
    BuiltKind("built", forms=("built",), help=("'built' (kdbg lab build-kernel's)",)),
    PathKind("path", forms=("PATH",), help=("a PATH to a kernel build directory or bzImage",),
             records=("build", "image")),
)


def kind_for(spec: str) -> KernelKind:
    """The row whose kind ``spec`` names (the first that accepts it). Raises BadInput
    for a malformed spec of a kind."""
    return next(kind for kind in KINDS if kind.accepts(spec))


def resolve_kernel(spec: str, progress: Progress = quiet) -> Kernel:
    """The kernel for ``--kernel SPEC``, fetched if its kind fetches. Raises BadInput."""
    return kind_for(spec).resolve(spec, progress)


def kind_of_lab(kernel_kind: str) -> KernelKind | None:
    """The row that answers the guest lookups of a lab whose record says ``kernel_kind``
    (None for a kind no row records)."""
    return next((kind for kind in KINDS if kernel_kind in kind.records), None)


def known_kernels() -> list[KernelChoice]:
    """The kernels ``kdbg lab up --kernel`` can boot, for ``kdbg lab kernels``: each
    kind's offers in the table's order, then the other kernels each kind has cached."""
    listings = [kind.listing() for kind in KINDS]
    return [c for one in listings for c in one.offered] + \
        [c for one in listings for c in one.cached]


def kernel_help() -> str:
    """``--kernel``'s help text: every kind's phrases, in the table's order."""
    phrases = [phrase for kind in KINDS for phrase in kind.help]
    return f"{', '.join(phrases[:-1])} or {phrases[-1]}."
