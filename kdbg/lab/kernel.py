"""A kernel the lab boots (:class:`Kernel`), read from a build tree or a bzImage, and
the tools every kind of lab kernel uses to fetch or build one.

A user's kernel (``--kernel PATH``) is a build directory (``.config`` and
``arch/x86/boot/bzImage``; virtme-run takes its modules and kdbg its ``vmlinux``) or a
bzImage alone. The kgdb lab kernel (:mod:`kdbg.lab.build`) is such a tree in the cache.
Debian's kernels are in :mod:`kdbg.lab.debian`; :mod:`kdbg.lab.kinds` is the table of
kinds that ``--kernel`` names.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kdbg.errors import BadInput, LabError
from kdbg.lifetime import die_with_parent

Progress = Callable[[str], None]

BZIMAGE = Path("arch/x86/boot/bzImage")


def quiet(_: str) -> None:
    """The progress callback that says nothing."""


@dataclass(frozen=True)
class Kernel:
    """A kernel the lab can boot.

    ``image`` is the bzImage; ``kdir`` a kernel build directory (virtme-run
    ``--kdir``) when the kernel was built; ``moddir`` the modules tree for
    ``release``; ``config`` its .config; ``vmlinux`` the ELF with DWARF when it is
    known to exist (for Debian kernels see :func:`kdbg.lab.debian.debian_vmlinux`).
    """

    kind: str  # "debian", "build" or "image": a lab records it (LabInfo.kernel_kind)
    release: str
    image: Path
    kdir: Path | None = None
    moddir: Path | None = None
    config: Path | None = None
    vmlinux: Path | None = None

    def option(self, name: str) -> str | None:
        """The value of ``CONFIG_<name>`` in the kernel's config, or None when unset.

        Raises LabError when the kernel's config is unknown.
        """
        if self.config is None or not self.config.exists():
            raise LabError(f"no .config known for kernel {self.image}")
        key = name if name.startswith("CONFIG_") else f"CONFIG_{name}"
        for line in self.config.read_text(errors="replace").splitlines():
            if line.startswith(key + "="):
                return line.split("=", 1)[1]
        return None


@dataclass(frozen=True)
class KernelChoice:
    """One line of ``kdbg lab kernels``: what ``--kernel`` takes and what is cached.

    ``uncached`` is what the IMAGE column says while the image is not cached: ``fetch``
    (``kdbg lab up`` fetches it) or ``build`` (``kdbg lab build-kernel`` makes it).
    """

    spec: str
    release: str | None
    about: str
    cached: bool
    vmlinux: bool
    uncached: str = "fetch"

    @property
    def image(self) -> str:
        """The IMAGE column: ``cached``, else how the image is got."""
        return "cached" if self.cached else self.uncached

    def to_json(self) -> dict[str, object]:
        """The record ``kdbg lab kernels --json`` prints."""
        return {"spec": self.spec, "release": self.release, "about": self.about,
                "cached": self.cached, "vmlinux": self.vmlinux}


@dataclass(frozen=True)
class Listing:
    """What one kind of kernel lists: the kernels it offers, then others in the cache
    (``kdbg lab kernels`` prints every kind's offers before any kind's cached extras)."""

    offered: list[KernelChoice] = field(default_factory=list)
    cached: list[KernelChoice] = field(default_factory=list)


def run_tool(argv: list[str], *, cwd: Path | None = None, what: str) -> str:
    """Run a build or fetch tool (it dies with kdbg, also from a thread fetching while a
    lab boots); its stdout, or LabError naming ``what`` with the last lines of its output."""
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                          preexec_fn=die_with_parent)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise LabError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


BUILD_DEPS = ("build-essential", "bc", "flex", "bison", "libelf-dev", "libssl-dev", "dwarves")


def ensure_build_deps(progress: Progress = quiet) -> None:
    """apt-get install the packages a kernel build (or ``make scripts_gdb``) needs, when
    some are missing."""
    missing = []
    for pkg in BUILD_DEPS:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status}", pkg], capture_output=True, text=True
        )
        if "install ok installed" not in proc.stdout:
            missing.append(pkg)
    if not missing:
        return
    progress(f"installing kernel build dependencies: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        raise LabError(f"apt-get install {' '.join(missing)} failed: {tail}")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so two kdbg processes never fetch the same thing."""
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def kernel_from_path(path: Path) -> Kernel:
    """A kernel the user names: a build directory (with .config and bzImage) or a bzImage.

    Raises BadInput when ``path`` is neither.
    """
    path = path.expanduser().resolve()
    if path.is_dir():
        image = path / BZIMAGE
        if not image.exists() or not (path / ".config").exists():
            raise BadInput(f"{path} is not a kernel build directory (no .config or {BZIMAGE})")
        release = _kernelrelease(path)
        vmlinux = path / "vmlinux"
        return Kernel(
            kind="build",
            release=release,
            image=image,
            kdir=path,
            config=path / ".config",
            vmlinux=vmlinux if vmlinux.exists() else None,
        )
    if path.is_file():
        if _image_version(path) is None:
            raise BadInput(f"{path} is not a bootable x86 kernel image")
        # A bzImage inside a build tree: use the tree, so modules and vmlinux come along.
        tree = build_tree_of(path)
        if tree is not None:
            return kernel_from_path(tree)
        release = _image_version(path) or "unknown"
        config = path.with_name(path.name.replace("vmlinuz", "config"))
        return Kernel(
            kind="image",
            release=release,
            image=path,
            config=config if config != path and config.exists() else None,
        )
    raise BadInput(f"kernel {path} does not exist")


def build_tree_of(image: Path) -> Path | None:
    """The build tree whose ``arch/x86/boot/bzImage`` ``image`` is, or None for a
    bzImage alone."""
    image = image.resolve()
    for parent in image.parents:
        if (parent / ".config").exists() and (parent / BZIMAGE).resolve() == image:
            return parent
    return None


def _kernelrelease(kdir: Path) -> str:
    rel = kdir / "include" / "config" / "kernel.release"
    if rel.exists():
        return rel.read_text().strip()
    return _image_version(kdir / BZIMAGE) or "unknown"


def image_version_string(image: Path) -> str | None:
    """The version string in an x86 bzImage's header (its ``kernel_version`` field, at
    0x200 past the offset at 0x20E): the kernel's ``/proc/version`` less ``Linux version``
    and the compiler, like ``6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP
    PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)``; None for no bzImage."""
    try:
        with open(image, "rb") as fh:
            head = fh.read(0x400)
            if head[0x202:0x206] != b"HdrS":
                return None
            offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
            fh.seek(offset)
            text = fh.read(256).split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return None
    return text or None


def _image_version(image: Path) -> str | None:
    """The release in an x86 bzImage's header (the version string's first word)."""
    text = image_version_string(image)
    return text.split(" ", 1)[0] if text else None
