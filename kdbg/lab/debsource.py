"""Debian's kernel source for a lab: the ``linux-source-X.Y`` package whose version is the
running kernel's package version exactly, fetched once into the cache and made ready for
gdb (Linux's ``scripts/gdb``, generated from the kernel's own config).

The version comes from the kernel itself: its version string ends ``... Debian
6.1.192-3 (2026-11-26)``, in the guest's ``/proc/version`` and in the bzImage's header
alike. The package is fetched with ``apt-get download`` and unpacked under a lock into a
temporary directory that is renamed when complete, so no run, concurrent or later,
sees half a tree: ``$XDG_CACHE_HOME/kdbg/source/linux-source-6.1_6.1.192-3/``. There,
with the kernel's config (the cached image package's ``boot/config-RELEASE``), ``make
olddefconfig`` and ``make scripts_gdb`` generate ``scripts/gdb/linux/constants.py`` and
link ``vmlinux-gdb.py`` at the tree's top; their output goes to ``.kdbg-make.log`` there,
and a stamp written last (with the config's hash) says the scripts are ready.

A version Debian no longer has gives no source, and a note in one line: never another
version's source.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kdbg.dirs import cache_dir
from kdbg.errors import LabError
from kdbg.lab.debian import apt_cache, apt_download, series_of
from kdbg.lab.kernel import Progress, ensure_build_deps, locked, quiet, run_tool
from kdbg.lab.source import CONSTANTS, GDB_SCRIPTS, KernelSource, build_of
from kdbg.lifetime import die_with_parent

SOURCE_DIR = "source"
MAKE_LOG = ".kdbg-make.log"
SCRIPTS_DONE = ".kdbg-gdb-scripts"

# "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)": the last "Debian VERSION (DATE)"
# after the build number (the compiler's part of /proc/version names Debian's gcc too).
_PACKAGE_VERSION = re.compile(r"#\d+ [^#]*?\bDebian (\S+) \(\d{4}-\d{2}-\d{2}\)")


def package_version(version_text: str) -> str | None:
    """The Debian package version a kernel's version string names (``/proc/version`` or
    the bzImage's header): ``6.1.192-3``, ``6.12.118-1~deb12u1``; None if it names none."""
    found = _PACKAGE_VERSION.findall(version_text)
    return found[-1] if found else None


@dataclass(frozen=True)
class SourcePackage:
    """The ``linux-source-X.Y`` package, at one version, that a Debian kernel was built from."""

    name: str
    version: str

    @property
    def key(self) -> str:
        """Its directory in the cache: ``linux-source-6.1_6.1.192-3``."""
        return f"{self.name}_{self.version}"

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def source_package(release: str, version_text: str) -> SourcePackage | None:
    """The source package of Debian's kernel ``release`` whose version string is
    ``version_text``: ``6.1.0-57-amd64`` + ``... Debian 6.1.192-3 (...)`` is
    ``linux-source-6.1`` 6.1.192-3. None when either names nothing."""
    series, version = series_of(release), package_version(version_text)
    if series is None or version is None:
        return None
    return SourcePackage(f"linux-source-{series}", version)


def apt_versions(show: str, madison: str) -> tuple[int | None, list[str]]:
    """From ``apt-cache show --no-all-versions PKG=VER`` and ``apt-cache madison PKG``:
    the .deb's size when apt has that version (None when not), and every version apt
    has, newest first."""
    size = re.search(r"^Size: (\d+)$", show, re.MULTILINE)
    versions: list[str] = []
    for line in madison.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[1] not in versions:
            versions.append(parts[1])
    return (int(size.group(1)) if size else None), versions


def gone_note(package: SourcePackage, versions: list[str], listed: bool = False) -> str:
    """The one line for a kernel whose source version apt does not have (``listed``:
    apt's lists name it, but the download found it gone)."""
    if not versions:
        return (f"apt knows no {package.name} (apt-get update?): no source is shown for "
                "this kernel")
    if listed:
        return (f"Debian has no {package} any more (apt-get download: 404 Not Found; "
                "apt-get update?): no source is shown for this kernel")
    shown = ", ".join(versions[:3]) + (", …" if len(versions) > 3 else "")
    return (f"Debian has no {package} any more (it has {shown}): no source is shown for "
            "this kernel")


def debian_source(release: str, version_text: str | None, config: Path, *,
                  progress: Progress = quiet, fetch: bool = True) -> KernelSource:
    """The source of Debian's kernel ``release`` whose version string is
    ``version_text``, with Linux's gdb scripts generated from ``config`` (the kernel's
    own). With ``fetch`` it is fetched and prepared once (under a lock, with progress
    lines); without, only the cache answers and the note says what a fetch would do.
    Raises LabError when a download, the unpacking or make fails."""
    package = source_package(release, version_text or "")
    if package is None:
        said = build_of(version_text)[1] if version_text else None
        return KernelSource(note=f"kernel {release}'s version string names no Debian package "
                                 f"version ({said or version_text or 'none'}): no source is "
                                 "shown for it")
    tree = cache_dir(SOURCE_DIR) / package.key
    if fetch:
        with locked(cache_dir(SOURCE_DIR) / f".{package.key}.lock"):
            if not tree.is_dir():
                show = apt_cache(["show", "--no-all-versions",
                                  f"{package.name}={package.version}"])
                size, versions = apt_versions(show, apt_cache(["madison", package.name]))
                if size is None:
                    return KernelSource(version=package.version,
                                        note=gone_note(package, versions))
                try:
                    _fetch_tree(package, size, tree, progress)
                except LabError as err:
                    if " 404 " not in str(err):
                        raise
                    # apt's lists still name it, Debian's mirror no longer has it.
                    return KernelSource(version=package.version,
                                        note=gone_note(package, versions, listed=True))
            if _scripts_ready(tree, config) is None and config.is_file():
                _make_scripts(tree, config, progress)
    return _cached(package, tree, config)


def _cached(package: SourcePackage, tree: Path, config: Path) -> KernelSource:
    """What the cache holds for ``package``, and what is missing in one line."""
    if not tree.is_dir():
        return KernelSource(version=package.version,
                            note=f"{package} is not in the cache yet (kdbg lab source "
                                 "fetches it, once)")
    scripts = _scripts_ready(tree, config)
    note = None
    if scripts is None:
        note = (f"no kernel config at {config}: Linux's gdb scripts are not prepared"
                if not config.is_file() else
                f"Linux's gdb scripts are not prepared in {tree} yet (kdbg lab source runs "
                "make scripts_gdb)")
    return KernelSource((tree,), scripts, package.version, note)


def _config_hash(config: Path) -> str:
    return hashlib.sha256(config.read_bytes()).hexdigest()[:16]


def _scripts_ready(tree: Path, config: Path) -> Path | None:
    """The tree's ``vmlinux-gdb.py`` when its scripts were generated from ``config``."""
    try:
        stamp = json.loads((tree / SCRIPTS_DONE).read_text())
        same = stamp.get("config") == _config_hash(config)
    except (OSError, ValueError, AttributeError):
        return None
    scripts = tree / GDB_SCRIPTS
    return scripts if same and scripts.is_file() and (tree / CONSTANTS).is_file() else None


def _fetch_tree(package: SourcePackage, size: int, tree: Path, progress: Progress) -> None:
    """Download and unpack ``package`` into ``tree`` (through a temporary directory
    renamed when complete; nothing of it is left on failure)."""
    started = time.monotonic()
    staging = tree.with_name(f".{package.key}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(exist_ok=True)
    try:
        progress(f"fetching {package} with apt-get download ({size / 1e6:.0f} MB)")
        deb = apt_download(package.name, staging, package.version)
        unpacked = unpack_linux_source(deb, package.name, staging, progress)
        unpacked.rename(tree)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"{package} unpacked in {time.monotonic() - started:.0f}s: {tree}")


def unpack_linux_source(deb: Path, package: str, into: Path, progress: Progress = quiet) -> Path:
    """Unpack the kernel tree of a ``linux-source-X.Y`` .deb into ``into`` (the .deb and
    the tarball are deleted); returns ``into/linux-source-X.Y``. xz runs on every core
    (Debian's tarball is xz in many blocks)."""
    member = f"./usr/src/{package}.tar.xz"
    run_tool(["bash", "-o", "pipefail", "-ec",
              f"dpkg-deb --fsys-tarfile {shlex.quote(str(deb))} | "
              f"tar -x -C {shlex.quote(str(into))} {member}"], what=f"reading {deb.name}")
    deb.unlink()
    tarball = into / member
    listed = run_tool(["xz", "--robot", "--list", str(tarball)], what="xz --list")
    totals = next((ln.split("\t") for ln in listed.splitlines() if ln.startswith("totals")), [])
    shown = f" ({int(totals[4]) / 1e9:.1f} GB)" if len(totals) > 4 else ""
    progress(f"unpacking the tree{shown}")
    run_tool(["tar", "-x", "-I", "xz -T0", "-f", str(tarball), "-C", str(into)],
             what=f"unpacking {tarball.name}")
    shutil.rmtree(into / "usr")
    top = into / package
    if not (top / "Makefile").is_file():
        raise LabError(f"{package}'s tarball did not unpack to {top}")
    return top


def _make_scripts(tree: Path, config: Path, progress: Progress) -> None:
    """Generate Linux's gdb scripts in ``tree`` from the kernel's ``config``: ``make
    olddefconfig``, ``make scripts_gdb`` (quiet, logged to the tree's .kdbg-make.log),
    then the stamp. Raises LabError naming the log when make fails."""
    ensure_build_deps(progress)
    started = time.monotonic()
    progress("generating Linux's gdb scripts from the kernel's config (make scripts_gdb)")
    (tree / SCRIPTS_DONE).unlink(missing_ok=True)
    shutil.copyfile(config, tree / ".config")
    log = tree / MAKE_LOG
    with open(log, "w") as out:
        for target in ("olddefconfig", "scripts_gdb"):
            done = subprocess.run(["make", "-C", str(tree), f"-j{os.cpu_count() or 1}", target],
                                  stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, check=False,
                                  preexec_fn=die_with_parent)
            if done.returncode != 0:
                raise LabError(f"make {target} failed (exit {done.returncode}) in {tree}: "
                               f"see {log}")
    if not (tree / CONSTANTS).is_file() or not (tree / GDB_SCRIPTS).is_file():
        raise LabError(f"make scripts_gdb made no {CONSTANTS} or {GDB_SCRIPTS} in {tree}: "
                       f"see {log}")
    (tree / SCRIPTS_DONE).write_text(json.dumps({"config": _config_hash(config),
                                                 "from": str(config)}) + "\n")
    took = time.monotonic() - started
    progress(f"Linux's gdb scripts ready in {took:.0f}s: {tree / GDB_SCRIPTS}")
