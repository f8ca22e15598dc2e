"""Build the kgdb lab kernel from Debian's ``linux-source-6.1`` and ``vm/kgdb-lab.config``.

The config is virtme-ng's minimal one (``virtme-configkernel --defconfig``) with the
fragment on top, settled by ``make olddefconfig``. The build is out of tree, in
``$XDG_CACHE_HOME/kdbg/kernels/kgdb-<hash>``, where ``<hash>`` covers the fragment,
the source package version and virtme-ng's version: the same inputs give the same
cached kernel, and a changed fragment gives a new one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from kdbg.dirs import VM_DIR, cache_dir
from kdbg.errors import LabError
from kdbg.lab.debian import apt_download
from kdbg.lab.debsource import unpack_linux_source
from kdbg.lab.kernel import (
    BZIMAGE,
    Kernel,
    Progress,
    ensure_build_deps,
    kernel_from_path,
    locked,
    quiet,
    run_tool,
)

FRAGMENT = VM_DIR / "kgdb-lab.config"
SOURCE_PACKAGE = "linux-source-6.1"


@dataclass(frozen=True)
class FragmentLine:
    """One line of a config fragment: ``CONFIG_X=value`` or ``# CONFIG_X is not set``."""

    name: str
    value: str | None  # None means "is not set"


def parse_fragment(text: str) -> list[FragmentLine]:
    """The settings in a config fragment, in order; comments and blank lines are skipped."""
    out: list[FragmentLine] = []
    for raw in text.splitlines():
        line = raw.strip()
        unset = re.fullmatch(r"# (CONFIG_\w+) is not set", line)
        if unset:
            out.append(FragmentLine(unset.group(1), None))
            continue
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"(CONFIG_\w+)=(.*)", line)
        if not m:
            raise LabError(f"bad config fragment line: {raw!r}")
        out.append(FragmentLine(m.group(1), m.group(2)))
    return out


def parse_config(text: str) -> dict[str, str | None]:
    """A .config as ``{CONFIG_X: value or None for 'is not set'}``."""
    out: dict[str, str | None] = {}
    for line in text.splitlines():
        unset = re.fullmatch(r"# (CONFIG_\w+) is not set", line.strip())
        if unset:
            out[unset.group(1)] = None
        elif line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def fragment_mismatches(fragment: str, config: str) -> list[str]:
    """Lines of ``fragment`` that ``config`` (a .config after olddefconfig) did not keep."""
    have = parse_config(config)
    bad = []
    for item in parse_fragment(fragment):
        got = have.get(item.name)
        if item.value is None:
            if got not in (None, "n"):
                bad.append(f"# {item.name} is not set (got {item.name}={got})")
        elif got != item.value:
            shown = "not set" if got is None else got
            bad.append(f"{item.name}={item.value} (got {shown})")
    return bad


def config_hash(fragment: str, source_version: str, virtme_version: str) -> str:
    """Cache key of a kgdb lab kernel: 12 hex digits over everything that shapes it."""
    h = hashlib.sha256()
    for part in (fragment, source_version, virtme_version):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def _virtme_version() -> str:
    try:
        return metadata.version("virtme-ng")
    except Exception:  # noqa: BLE001 - any failure means "unknown"
        return "unknown"


def _tool(name: str) -> str:
    """A virtme-ng tool from the same environment as this Python, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise LabError(f"{name} not found", hint="pip install virtme-ng (kdbg's 'lab' extra)")
    return found


def source_version() -> str:
    """The candidate version of ``linux-source-6.1`` that apt would fetch."""
    out = run_tool(
        ["apt-cache", "show", "--no-all-versions", SOURCE_PACKAGE], what="apt-cache show"
    )
    m = re.search(r"^Version: (\S+)", out, re.M)
    if not m:
        raise LabError(f"apt knows no {SOURCE_PACKAGE}", hint="apt-get update")
    return m.group(1)


def source_tree(progress: Progress = quiet) -> Path:
    """Debian's ``linux-source-6.1`` unpacked in the cache (once), kept clean for builds
    out of tree (its ``make`` runs with ``O=``); returns the tree."""
    version = source_version()
    base = cache_dir("kernel-src", version)
    tree = base / SOURCE_PACKAGE
    with locked(base / ".lock"):
        if (base / ".complete").exists():
            return tree
        started = time.monotonic()
        progress(f"fetching {SOURCE_PACKAGE} {version} (about 140 MB)")
        shutil.rmtree(tree, ignore_errors=True)
        deb = apt_download(SOURCE_PACKAGE, base, version)
        unpack_linux_source(deb, SOURCE_PACKAGE, base, progress)
        (base / ".complete").write_text(version + "\n")
        progress(f"kernel source ready in {time.monotonic() - started:.0f}s: {tree}")
        return tree


def configure(tree: Path, outdir: Path, fragment: Path = FRAGMENT) -> Path:
    """Write ``outdir/.config``: virtme-ng's minimal config, the fragment, olddefconfig.

    Raises LabError naming every fragment line that did not survive.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    run_tool(
        [_tool("virtme-configkernel"), "--defconfig", "--custom", str(fragment), f"O={outdir}"],
        cwd=tree,
        what="virtme-configkernel",
    )
    run_tool(["make", "-s", "-C", str(tree), f"O={outdir}", "olddefconfig"], what="olddefconfig")
    config = outdir / ".config"
    bad = fragment_mismatches(fragment.read_text(), config.read_text())
    if bad:
        raise LabError("config fragment lines lost in olddefconfig: " + "; ".join(bad))
    return config


def cached_build(fragment: Path = FRAGMENT) -> Kernel | None:
    """The cached kgdb lab kernel for the current fragment, or None if not built yet."""
    key = config_hash(fragment.read_text(), source_version(), _virtme_version())
    outdir = cache_dir("kernels") / f"kgdb-{key}"
    if not (outdir / ".complete").exists():
        return None
    return kernel_from_path(outdir)


def build_kernel(
    *,
    jobs: int | None = None,
    nice: int = 0,
    fragment: Path = FRAGMENT,
    progress: Progress = quiet,
    force: bool = False,
) -> Kernel:
    """Build (or reuse) the kgdb lab kernel; returns it with its bzImage and DWARF vmlinux.

    Progress lines go to ``progress`` every 30 s; the full make output to
    ``<outdir>/build.log``. ``nice`` lowers the build's CPU priority.
    """
    ensure_build_deps(progress)
    tree = source_tree(progress)
    key = config_hash(fragment.read_text(), source_version(), _virtme_version())
    outdir = cache_dir("kernels") / f"kgdb-{key}"
    stamp = outdir / ".complete"
    with locked(cache_dir("kernels") / f".kgdb-{key}.lock"):
        if stamp.exists() and not force:
            progress(f"cached kgdb lab kernel {key}: {outdir}")
            return kernel_from_path(outdir)
        stamp.unlink(missing_ok=True)
        progress(f"configuring kgdb lab kernel {key} in {outdir}")
        configure(tree, outdir, fragment)
        jobs = jobs or os.cpu_count() or 1
        argv = ["make", "-C", str(tree), f"O={outdir}", f"-j{jobs}"]
        if nice:
            argv = ["nice", "-n", str(nice), *argv]
        progress(f"building: {' '.join(argv)} (about 18 min on 2 idle cores)")
        _make(argv, outdir / "build.log", progress)
        for needed in (outdir / BZIMAGE, outdir / "vmlinux"):
            if not needed.exists():
                raise LabError(f"the build produced no {needed}")
        stamp.write_text(key + "\n")
        kernel = kernel_from_path(outdir)
        size = (outdir / "vmlinux").stat().st_size / 1e6
        progress(f"built {kernel.release}: {kernel.image} and vmlinux ({size:.0f} MB)")
        return kernel


def _make(argv: list[str], log: Path, progress: Progress) -> None:
    started = time.monotonic()
    last_report = started
    last_line = ""
    with open(log, "w") as logf:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                logf.write(line)
                if line.strip():
                    last_line = line.strip()
                now = time.monotonic()
                if now - last_report >= 30:
                    last_report = now
                    mins, secs = divmod(int(now - started), 60)
                    progress(f"  {mins:d}m{secs:02d}s  {last_line}")
            proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise LabError(f"kernel build failed (exit {proc.returncode}), see {log}:\n{tail}")
    progress(f"make finished in {(time.monotonic() - started) / 60:.1f} min")
