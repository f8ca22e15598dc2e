"""Debian's kernels for the lab: the stock image (fetched, never installed) and its debug files.

The default lab kernel is Debian's ``linux-image-<ver>-amd64`` for the same ``<ver>``
as the installed ``linux-headers-amd64``, so bcc inside the guest can use the host's
headers. It is fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into
``$XDG_CACHE_HOME/kdbg/kernels/debian-<ver>/root``; ``depmod`` runs on that tree and
``lib/modules/<ver>/{build,source}`` there link to ``/usr/src/linux-headers-<ver>-*``.
virtme-ng then links the guest's ``/lib/modules/<ver>`` (a tmpfs) to that tree, so
nothing is written into the host's ``/lib/modules``.

Its debug ``vmlinux`` (DWARF, for gdb backtraces) comes from ``linux-image-<ver>-dbg``
on first use: an 858 MB .deb of which only ``./usr/lib/debug/boot/vmlinux-<ver>``
(633 MB) is kept.

Newer Debian kernels come the same way (``--kernel debian:6.12``: Debian's newest 6.12,
from bookworm-backports or bookworm-security, the apt sources ``scripts/setup.sh``
adds). No headers match them; the guest agent links the installed 6.1 headers for
bcc instead, which works because the tracer takes every struct offset from BTF.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kdbg.dirs import cache_dir
from kdbg.errors import BadInput, LabError
from kdbg.lab.kernel import Kernel, KernelChoice, Listing, Progress, locked, quiet, run_tool


def debian_release() -> str:
    """The ``<ver>-amd64`` release that the installed ``linux-headers-amd64`` points at."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Depends}", "linux-headers-amd64"],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"linux-headers-(\d[\w.+-]*-amd64)", proc.stdout)
    if m:
        return m.group(1)
    dirs = sorted(Path("/usr/src").glob("linux-headers-*-amd64"))
    if dirs:
        return dirs[-1].name.removeprefix("linux-headers-")
    raise LabError(
        "no Debian kernel headers installed (linux-headers-amd64)",
        hint="run scripts/setup.sh, or apt-get install linux-headers-amd64",
    )


DEBIAN = "debian"
_SERIES = re.compile(r"\d+\.\d+")
_RELEASE = re.compile(r"\d+\.\d+[.\d]*[-+][\w.+-]*-amd64")
_IMAGE_PACKAGE = re.compile(r"linux-image-(\d+\.\d+\.\d+\+deb\d+(?:\.\d+)?-amd64)")


@dataclass(frozen=True)
class DebianSpec:
    """A ``--kernel debian[:SERIES|:RELEASE]`` request.

    Neither set: the kernel matching the installed headers (``debian``). ``series``
    (``6.12``): Debian's newest kernel of that series that apt knows. ``release``
    (``6.12.95+deb12-amd64``): exactly that one.
    """

    series: str | None = None
    release: str | None = None

    def __str__(self) -> str:
        return DEBIAN + (f":{self.series or self.release}" if self.series or self.release else "")


def parse_debian_spec(spec: str) -> DebianSpec | None:
    """``debian``, ``debian:6.12`` or ``debian:6.12.95+deb12-amd64``; None for another kind
    of spec (``built``, a path). Raises BadInput for a malformed ``debian:`` spec."""
    if spec == DEBIAN:
        return DebianSpec()
    if not spec.startswith(DEBIAN + ":"):
        return None
    arg = spec.split(":", 1)[1]
    if _SERIES.fullmatch(arg):
        return DebianSpec(series=arg)
    if _RELEASE.fullmatch(arg):
        return DebianSpec(release=arg)
    raise BadInput(f"bad kernel {spec!r}: debian, debian:SERIES (like debian:6.12) or "
                   "debian:RELEASE (like debian:6.12.95+deb12-amd64)")


def in_series(release: str, series: str) -> bool:
    """``6.1.0-57-amd64`` is in 6.1, ``6.12.95+deb12-amd64`` in 6.12 (and not in 6.1)."""
    return re.match(re.escape(series) + r"[.+-]", release) is not None


def series_of(release: str) -> str | None:
    """The series of a release: ``6.1`` for ``6.1.0-57-amd64``, ``6.12`` for
    ``6.12.118+deb12-amd64``; None for what is no release."""
    m = re.match(r"(\d+\.\d+)[.+-]", release)
    return m.group(1) if m else None


def _version_key(release: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", release))


def apt_cache(argv: list[str]) -> str:
    """``apt-cache ARGV``'s output, or "" when it fails (apt knows no such package)."""
    proc = subprocess.run(["apt-cache", *argv], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else ""


APT_LISTS = Path("/var/lib/apt/lists")


def _apt_newest(series: str) -> str | None:
    """The newest ``<series>`` release apt can fetch with its -dbg: the one Debian's
    meta-package ``linux-image-<series>-amd64`` depends on, else the highest version
    among the image packages apt knows. Remembered until apt's lists change (apt-cache
    takes a second or more, and ``lab up`` asks every time)."""
    try:
        lists = str(APT_LISTS.stat().st_mtime_ns)
    except OSError:
        lists = ""
    memo = cache_dir("kernels") / f"apt-newest-{series}"
    try:
        stamp, release = memo.read_text().split()
        if lists and stamp == lists:
            return release
    except (OSError, ValueError):
        pass
    newest = _apt_newest_now(series)
    if newest is not None and lists:
        memo.write_text(f"{lists} {newest}\n")
    return newest


def _apt_newest_now(series: str) -> str | None:
    shown = apt_cache(["show", "--no-all-versions", f"linux-image-{series}-amd64"])
    for line in shown.splitlines():
        if line.startswith("Depends:"):
            m = _IMAGE_PACKAGE.search(line)
            if m and in_series(m.group(1), series):
                return m.group(1)
    names = set(apt_cache(["pkgnames", f"linux-image-{series}."]).split())
    found = [m.group(1) for n in names if (m := _IMAGE_PACKAGE.fullmatch(n))]
    found = [r for r in found if in_series(r, series) and f"linux-image-{r}-dbg" in names]
    return max(found, key=_version_key) if found else None


def cached_releases() -> list[str]:
    """Debian kernel releases unpacked in the cache, oldest first."""
    done = [p.parent.name.removeprefix("debian-")
            for p in cache_dir("kernels").glob("debian-*/.complete")]
    return sorted(done, key=_version_key)


def resolve_debian(spec: DebianSpec) -> str:
    """The Debian release ``spec`` names, from the installed headers or apt's lists;
    a cached kernel of the series when apt knows none. Raises BadInput."""
    if spec.release:
        if spec.release in cached_releases() or apt_cache(["show", f"linux-image-{spec.release}"]):
            return spec.release
        raise BadInput(f"apt knows no linux-image-{spec.release}",
                       hint="kdbg lab kernels; run scripts/setup.sh (adds bookworm-backports)")
    headers = debian_release()
    if spec.series is None or in_series(headers, spec.series):
        return headers
    newest = _apt_newest(spec.series)
    if newest is not None:
        return newest
    cached = [r for r in cached_releases() if in_series(r, spec.series)]
    if cached:
        return cached[-1]
    raise BadInput(f"apt knows no Debian {spec.series} kernel (linux-image-{spec.series}-amd64)",
                   hint="run scripts/setup.sh (it adds bookworm-backports), then apt-get update")


def apt_download(package: str, into: Path, version: str | None = None) -> Path:
    """``apt-get download PACKAGE`` (``=VERSION`` when given) into ``into``; returns the
    .deb path."""
    for old in into.glob(f"{package}_*.deb"):
        old.unlink()
    wanted = f"{package}={version}" if version else package
    proc = subprocess.run(
        ["apt-get", "download", "-q", wanted], cwd=into, capture_output=True, text=True
    )
    debs = sorted(into.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        raise LabError(
            f"apt-get download {wanted} failed: {tail}",
            hint="check apt sources and run apt-get update",
        )
    return debs[-1]


def debian_kernel(progress: Progress = quiet, release: str | None = None) -> Kernel:
    """Debian's stock kernel ``release`` (default: the one matching the installed headers),
    fetched into the cache on first use."""
    release = release or debian_release()
    base = cache_dir("kernels", f"debian-{release}")
    root = base / "root"
    image = root / "boot" / f"vmlinuz-{release}"
    moddir = root / "lib" / "modules" / release
    stamp = base / ".complete"
    with locked(base / ".lock"):
        if not stamp.exists():
            _fetch_debian_image(release, base, progress)
            stamp.write_text(release + "\n")
    vmlinux = base / f"vmlinux-{release}"
    return Kernel(
        kind="debian",
        release=release,
        image=image,
        moddir=moddir,
        config=debian_config(release),
        vmlinux=vmlinux if vmlinux.exists() else None,
    )


def debian_config(release: str) -> Path:
    """Where the cached image package keeps Debian's kernel ``release``'s config."""
    return cache_dir("kernels", f"debian-{release}") / "root" / "boot" / f"config-{release}"


def planned_kernel(release: str) -> Kernel:
    """Debian's kernel ``release`` as a dry run shows it: the image's path in the cache,
    whether fetched yet or not (nothing is fetched)."""
    base = cache_dir("kernels", f"debian-{release}")
    return Kernel("debian", release, base / "root" / "boot" / f"vmlinuz-{release}")


def _fetch_debian_image(release: str, base: Path, progress: Progress) -> None:
    package = f"linux-image-{release}"
    started = time.monotonic()
    progress(f"fetching {package} with apt-get download (70-110 MB)")
    tmp = base / "download"
    tmp.mkdir(exist_ok=True)
    deb = apt_download(package, tmp)
    root = base / "root"
    staging = base / "root.new"
    shutil.rmtree(staging, ignore_errors=True)
    progress(f"unpacking {deb.name} (dpkg -x, not installed)")
    run_tool(["dpkg-deb", "-x", str(deb), str(staging)], what=f"dpkg -x {deb.name}")
    deb.unlink()
    moddir = staging / "lib" / "modules" / release
    if not moddir.is_dir():
        raise LabError(f"{package} has no lib/modules/{release}")
    progress("depmod on the unpacked modules")
    run_tool(["depmod", "-a", "-b", str(staging), release], what="depmod")
    headers = Path(f"/usr/src/linux-headers-{release}")
    common = Path(f"/usr/src/linux-headers-{release.removesuffix('-amd64')}-common")
    for link, target in (("build", headers), ("source", common)):
        (moddir / link).unlink(missing_ok=True)
        # No headers for this release (a 6.12 lab): the guest agent links others.
        if target.is_dir():
            os.symlink(target, moddir / link)
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    progress(f"kernel {release} ready in {time.monotonic() - started:.1f}s: {root}")


# Module debug files kept beside the vmlinux (from the same -dbg package): the network
# stack's and the virtual NICs', so drops and stops in modules get file:line too.
DEBUG_MODULE_DIRS = (
    "net/netfilter", "net/ipv4", "net/ipv6", "net/bridge", "net/sched", "net/core",
    "net/8021q", "net/packet", "net/xfrm", "net/sctp", "net/openvswitch", "net/mpls",
    "net/l2tp", "net/tls", "net/mptcp", "net/unix", "net/netlink",
    "drivers/net/veth.ko", "drivers/net/virtio_net.ko", "drivers/net/tun.ko",
    "drivers/net/geneve.ko", "drivers/net/macvlan.ko", "drivers/net/dummy.ko",
    "drivers/net/vxlan", "drivers/net/bonding", "drivers/net/wireguard", "drivers/net/ipvlan",
)
MODULES_DONE = ".debug-modules"


def debian_module_debug(release: str) -> Path | None:
    """The tree of module debug ``.ko`` files fetched with the vmlinux, if it is there."""
    base = cache_dir("kernels", f"debian-{release}")
    root = base / "debug" / "lib" / "modules" / release / "kernel"
    return root if (base / MODULES_DONE).exists() and root.is_dir() else None


def debian_vmlinux(release: str | None = None, progress: Progress = quiet) -> Path:
    """The debug vmlinux (DWARF) of Debian's kernel ``release``, fetched on first use.

    Downloads ``linux-image-<release>-dbg`` (858 MB, about 11 s here), extracts
    ``./usr/lib/debug/boot/vmlinux-<release>`` (633 MB) and the debug files of the
    network modules (:data:`DEBUG_MODULE_DIRS`, about 300 MB; see
    :func:`debian_module_debug`) in one pass, and deletes the .deb. A cache from before
    module files were kept gets them on the next call.
    """
    release = release or debian_release()
    base = cache_dir("kernels", f"debian-{release}")
    target = base / f"vmlinux-{release}"
    with locked(base / ".vmlinux.lock"):
        if target.exists() and (base / MODULES_DONE).exists():
            return target
        package = f"linux-image-{release}-dbg"
        started = time.monotonic()
        progress(f"fetching {package} for the debug vmlinux and module debug files "
                 "(858 MB .deb, once)")
        tmp = base / "download-dbg"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            deb = apt_download(package, tmp)
            prefix = f"./usr/lib/debug/lib/modules/{release}/kernel"
            vmlinux = f"./usr/lib/debug/boot/vmlinux-{release}"
            members = [] if target.exists() else [vmlinux]
            members += [f"{prefix}/{d}" if d.endswith(".ko") else f"{prefix}/{d}/*"
                        for d in DEBUG_MODULE_DIRS]
            progress("extracting the vmlinux and the network modules' debug files (about 60 s)")
            dpkg = subprocess.Popen(
                ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
            )
            # tar exits 2 for a pattern that matched nothing (a module this kernel does
            # not have); what matched is extracted, and the vmlinux is checked below.
            tar = subprocess.run(
                ["tar", "-x", "--wildcards", "-C", str(tmp), *members],
                stdin=dpkg.stdout,
                capture_output=True,
                text=True,
            )
            assert dpkg.stdout is not None
            dpkg.stdout.close()
            dpkg.wait()
            if dpkg.returncode != 0:
                raise LabError(f"dpkg-deb could not read {deb.name} (status {dpkg.returncode})")
            if not target.exists():
                extracted = tmp / vmlinux
                if not extracted.exists():
                    raise LabError(f"could not extract {vmlinux} from {deb.name}: "
                                   f"{tar.stderr.strip()[-300:]}")
                extracted.rename(target)
            modules = tmp / prefix
            if modules.is_dir():
                dest = base / "debug" / "lib" / "modules" / release
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                modules.rename(dest / "kernel")
            (base / MODULES_DONE).write_text(f"{sum(1 for _ in base.glob('debug/**/*.ko'))}\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        took = time.monotonic() - started
        progress(f"debug vmlinux and module debug files ready in {took:.0f}s: {target}")
        return target


def _debian_choice(spec: str, release: str, about: str) -> KernelChoice:
    base = cache_dir("kernels", f"debian-{release}")
    return KernelChoice(spec, release, about, (base / ".complete").exists(),
                        (base / f"vmlinux-{release}").exists() and (base / MODULES_DONE).exists())


def listing() -> Listing:
    """Debian's kernels for ``kdbg lab kernels``: the one for the installed headers and
    the newest of each further series apt knows (its ``linux-image-X.Y-amd64``
    meta-package); then any other Debian kernel in the cache."""
    out = Listing()
    seen: set[str] = set()
    try:
        headers = debian_release()
    except LabError:
        headers = None
    if headers is not None:
        out.offered.append(_debian_choice(DEBIAN, headers,
                                          "Debian's, matching the installed headers"))
        seen.add(headers)
    metas = re.findall(r"^linux-image-(\d+\.\d+)-amd64$",
                       apt_cache(["pkgnames", "linux-image-"]), re.MULTILINE)
    for series in sorted(set(metas), key=_version_key):
        if headers is not None and in_series(headers, series):
            continue
        release = _apt_newest(series)
        if release is not None:
            out.offered.append(_debian_choice(f"{DEBIAN}:{series}", release,
                                              f"Debian's newest {series} (apt)"))
            seen.add(release)
    for release in cached_releases():
        if release not in seen:
            out.cached.append(_debian_choice(f"{DEBIAN}:{release}", release,
                                             "Debian's, in the cache"))
    return out
