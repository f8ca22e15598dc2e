"""A lab kernel's source and Linux's gdb scripts (kdbg/lab/source.py, debsource.py): the
version match of kernel and source from recorded version strings, bzImage headers and
apt-cache output, each kind's answer on trees laid out like the real ones, and the fetch
of a small linux-source .deb made here (real dpkg-deb, tar, xz and make)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from kdbg.cli import main as cli_main
from kdbg.errors import LabError
from kdbg.lab import KernelSource, debsource, guest, lifecycle
from kdbg.lab.debsource import (
    SourcePackage,
    apt_versions,
    debian_source,
    gone_note,
    package_version,
    source_package,
)
from kdbg.lab.kernel import BZIMAGE, Kernel, image_version_string
from kdbg.lab.kinds import KINDS
from kdbg.lab.registry import LabConfig
from kdbg.lab.source import build_of, tree_source
from tests.conftest import DATA

KERNEL = DATA / "kernel"
ROWS = {kind.name: kind for kind in KINDS}
PROC_61 = (KERNEL / "proc-version-6.1.0-57-amd64").read_text()
PROC_612 = (KERNEL / "proc-version-6.12.118+deb12-amd64").read_text()
HEAD_61 = KERNEL / "bzimage-head-6.1.0-57-amd64"
HEAD_612 = KERNEL / "bzimage-head-6.12.118+deb12-amd64"
HEAD_KGDB = KERNEL / "bzimage-head-kgdb-6.1.192"

# --- the version match --------------------------------------------------------------------


def test_the_bzimage_header_gives_the_kernels_version_string() -> None:
    assert image_version_string(HEAD_61) == (
        "6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC "
        "Debian 6.1.192-3 (2026-11-26)")
    assert image_version_string(HEAD_612) == (
        "6.12.118+deb12-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC "
        "Debian 6.12.118-1~deb12u1 (2026-11-28)")
    assert image_version_string(HEAD_KGDB) == (
        "6.1.192 (root@vm) #1 SMP PREEMPT_DYNAMIC Sun Dec  6 15:29:42 UTC 2026")
    assert image_version_string(KERNEL / "proc-version-6.1.0-57-amd64") is None


@pytest.mark.parametrize("text, version", [
    (PROC_61, "6.1.192-3"),  # its compiler is "Debian 12.2.0-14+deb12u1" too
    (PROC_612, "6.12.118-1~deb12u1"),
    (image_version_string(HEAD_61), "6.1.192-3"),
    (image_version_string(HEAD_612), "6.12.118-1~deb12u1"),
    (image_version_string(HEAD_KGDB), None),
    ("", None),
])
def test_the_package_version_comes_from_the_kernels_version_string(
        text: str, version: str | None) -> None:
    assert package_version(text) == version


def test_proc_version_and_the_bzimage_of_one_build_agree() -> None:
    for proc, head in ((PROC_61, HEAD_61), (PROC_612, HEAD_612)):
        built = image_version_string(head)
        assert built is not None and build_of(proc) == build_of(built)
    assert build_of(PROC_61) == (
        "6.1.0-57-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)")
    assert build_of(PROC_61) != build_of(image_version_string(HEAD_KGDB) or "")


@pytest.mark.parametrize("release, text, package", [
    ("6.1.0-57-amd64", PROC_61, SourcePackage("linux-source-6.1", "6.1.192-3")),
    ("6.1.0-57-amd64", image_version_string(HEAD_61),
     SourcePackage("linux-source-6.1", "6.1.192-3")),
    ("6.12.118+deb12-amd64", PROC_612, SourcePackage("linux-source-6.12", "6.12.118-1~deb12u1")),
    ("6.12.118+deb12-amd64", image_version_string(HEAD_612),
     SourcePackage("linux-source-6.12", "6.12.118-1~deb12u1")),
    ("6.1.192", image_version_string(HEAD_KGDB), None),
    ("unknown", PROC_61, None),
])
def test_the_package_and_version_a_debian_kernel_needs(
        release: str, text: str, package: SourcePackage | None) -> None:
    assert source_package(release, text) == package


def test_the_package_is_named_in_the_cache_by_name_and_version() -> None:
    package = SourcePackage("linux-source-6.12", "6.12.118-1~deb12u1")
    assert package.key == "linux-source-6.12_6.12.118-1~deb12u1"
    assert str(package) == "linux-source-6.12 6.12.118-1~deb12u1"


def apt_reply(argv: list[str]) -> str:
    """apt-cache's recorded output for ``argv`` (an unknown version printed nothing)."""
    name = "apt-cache-" + "-".join(argv).replace("--no-all-versions-", "")
    return (KERNEL / name).read_text()


def test_apt_has_the_version_and_its_size() -> None:
    show = apt_reply(["show", "--no-all-versions", "linux-source-6.1=6.1.192-3"])
    size, versions = apt_versions(show, apt_reply(["madison", "linux-source-6.1"]))
    assert size == 139330232
    assert versions == ["6.1.192-3", "6.1.192-2", "6.1.192-1", "6.1.190-1", "6.1.187-1",
                        "6.1.176-1", "6.1.170-3"]


def test_a_version_apt_does_not_list_is_one_line() -> None:
    package = SourcePackage("linux-source-6.1", "6.1.193-1")
    size, versions = apt_versions(
        apt_reply(["show", "--no-all-versions", "linux-source-6.1=6.1.193-1"]),
        apt_reply(["madison", "linux-source-6.1"]))
    assert size is None
    assert gone_note(package, versions) == (
        "Debian has no linux-source-6.1 6.1.193-1 any more (it has 6.1.192-3, 6.1.192-2, "
        "6.1.192-1, …): no source is shown for this kernel")
    assert gone_note(package, []) == (
        "apt knows no linux-source-6.1 (apt-get update?): no source is shown for this kernel")


# --- Debian's answer from the cache -------------------------------------------------------


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "kdbg"


def kernel_config(tmp_path: Path, text: str = "CONFIG_X86_64=y\n") -> Path:
    config = tmp_path / "config-6.1.0-57-amd64"
    config.write_text(text)
    return config


def test_debian_without_a_fetch_says_what_a_fetch_would_do(cache: Path, tmp_path: Path) -> None:
    config = kernel_config(tmp_path)
    got = debian_source("6.1.0-57-amd64", PROC_61, config, fetch=False)
    assert got == KernelSource(version="6.1.192-3", note="linux-source-6.1 6.1.192-3 is not in "
                               "the cache yet (kdbg lab source fetches it, once)")
    tree = cache / "source" / "linux-source-6.1_6.1.192-3"
    (tree / "scripts/gdb/linux").mkdir(parents=True)
    got = debian_source("6.1.0-57-amd64", PROC_61, config, fetch=False)
    assert got == KernelSource((tree,), None, "6.1.192-3", f"Linux's gdb scripts are not "
                               f"prepared in {tree} yet (kdbg lab source runs make scripts_gdb)")
    # The scripts count once their stamp names this config: a stamp is written last.
    (tree / "scripts/gdb/linux/constants.py").write_text("import gdb\n")
    (tree / "vmlinux-gdb.py").symlink_to("scripts/gdb/vmlinux-gdb.py")
    (tree / "scripts/gdb/vmlinux-gdb.py").write_text("")
    (tree / debsource.SCRIPTS_DONE).write_text(
        json.dumps({"config": debsource._config_hash(config)}))
    assert debian_source("6.1.0-57-amd64", PROC_61, config, fetch=False) == KernelSource(
        (tree,), tree / "vmlinux-gdb.py", "6.1.192-3", None)
    other = kernel_config(tmp_path / "..", "CONFIG_X86_64=y\nCONFIG_KGDB=y\n")
    assert debian_source("6.1.0-57-amd64", PROC_61, other, fetch=False).gdb_scripts is None
    gone = debian_source("6.1.0-57-amd64", PROC_61, tmp_path / "no-config", fetch=False)
    assert gone.dirs == (tree,) and gone.note == (
        f"no kernel config at {tmp_path / 'no-config'}: Linux's gdb scripts are not prepared")


def test_debian_never_gives_another_versions_source(cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (cache / "source" / "linux-source-6.1_6.1.192-3").mkdir(parents=True)
    monkeypatch.setattr(debsource, "apt_cache", apt_reply)
    newer = PROC_61.replace("Debian 6.1.192-3 (", "Debian 6.1.193-1 (")
    got = debian_source("6.1.0-57-amd64", newer, kernel_config(tmp_path))
    assert got == KernelSource(version="6.1.193-1", note=(
        "Debian has no linux-source-6.1 6.1.193-1 any more (it has 6.1.192-3, 6.1.192-2, "
        "6.1.192-1, …): no source is shown for this kernel"))
    built = image_version_string(HEAD_KGDB)
    assert debian_source("6.1.0-57-amd64", built, kernel_config(tmp_path)) == KernelSource(
        note="kernel 6.1.0-57-amd64's version string names no Debian package version "
             "(#1 SMP PREEMPT_DYNAMIC Sun Dec 6 15:29:42 UTC 2026): no source is shown for it")


# --- the fetch, on a linux-source .deb made here ------------------------------------------

TOY_MAKEFILE = """\
olddefconfig:
\tgrep -q CONFIG_X86_64=y .config
\techo olddefconfig done
scripts_gdb:
\tmkdir -p scripts/gdb/linux
\techo 'import gdb' > scripts/gdb/linux/constants.py
\ttouch scripts/gdb/vmlinux-gdb.py
\tln -fsn $(CURDIR)/scripts/gdb/vmlinux-gdb.py vmlinux-gdb.py
"""


def toy_deb(tmp_path: Path, makefile: str = TOY_MAKEFILE) -> Path:
    """A linux-source-6.1 .deb laid out as Debian's (./usr/src/linux-source-6.1.tar.xz
    with the tree under linux-source-6.1/), whose Makefile makes the two targets."""
    work = tmp_path / "toy"
    tree = work / "linux-source-6.1"
    (tree / "net/netfilter").mkdir(parents=True)
    (tree / "Makefile").write_text(makefile)
    (tree / "net/netfilter/core.c").write_text("int x;\n\tswitch (verdict) {\n")
    pkg = work / "pkg"
    (pkg / "usr/src").mkdir(parents=True)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text(
        "Package: linux-source-6.1\nVersion: 6.1.192-3\nArchitecture: all\n"
        "Maintainer: kdbg <kdbg@localhost>\nDescription: toy\n")
    subprocess.run(["tar", "-cJf", str(pkg / "usr/src/linux-source-6.1.tar.xz"), "-C", str(work),
                    "linux-source-6.1"], check=True)
    deb = tmp_path / "linux-source-6.1_6.1.192-3_all.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", str(pkg), str(deb)], check=True,
                   capture_output=True)
    return deb


@pytest.fixture
def apt_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """apt as recorded, its download a copy of the toy .deb; the build tools are there."""
    fetched: list[str] = []

    def download(package: str, into: Path, version: str | None = None) -> Path:
        fetched.append(f"{package}={version}")
        deb = tmp_path / "linux-source-6.1_6.1.192-3_all.deb"
        return Path(shutil.copy(deb, into / deb.name))

    monkeypatch.setattr(debsource, "apt_cache", apt_reply)
    monkeypatch.setattr(debsource, "apt_download", download)
    monkeypatch.setattr(debsource, "ensure_build_deps", lambda progress: None)
    return fetched


needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("dpkg-deb", "xz", "make", "tar")),
    reason="dpkg-deb, xz, tar and make make the toy package")


@pytest.fixture
def toy_config(tmp_path: Path, apt_here: list[str]) -> Path:
    """The toy package ready to fetch; the kernel config it is prepared with."""
    toy_deb(tmp_path)
    return kernel_config(tmp_path)


@needs_tools
def test_a_fetch_unpacks_once_and_prepares_the_scripts(cache: Path, toy_config: Path,
                                                       apt_here: list[str]) -> None:
    config = toy_config
    lines: list[str] = []
    got = debian_source("6.1.0-57-amd64", PROC_61, config, progress=lines.append)
    tree = cache / "source" / "linux-source-6.1_6.1.192-3"
    assert got == KernelSource((tree,), tree / "vmlinux-gdb.py", "6.1.192-3", None)
    assert apt_here == ["linux-source-6.1=6.1.192-3"]
    assert lines[0] == "fetching linux-source-6.1 6.1.192-3 with apt-get download (139 MB)"
    assert lines[1].startswith("unpacking the tree (0.0 GB)")
    assert lines[2].startswith("linux-source-6.1 6.1.192-3 unpacked in ")
    assert lines[3] == "generating Linux's gdb scripts from the kernel's config (make scripts_gdb)"
    assert lines[4].startswith("Linux's gdb scripts ready in ")
    assert (tree / ".config").read_text() == config.read_text()
    assert "olddefconfig done" in (tree / debsource.MAKE_LOG).read_text()
    assert got.line_text("net/netfilter/core.c", 2) == "\tswitch (verdict) {"
    # Nothing else is left: no .deb, no tarball, no temporary tree.
    assert sorted(p.name for p in (cache / "source").iterdir()) == [
        ".linux-source-6.1_6.1.192-3.lock", "linux-source-6.1_6.1.192-3"]
    assert not list(tree.glob("*.deb")) and not (tree / "usr").exists()
    again: list[str] = []
    assert debian_source("6.1.0-57-amd64", PROC_61, config, progress=again.append) == got
    assert again == [] and apt_here == ["linux-source-6.1=6.1.192-3"]


@needs_tools
def test_two_fetches_at_once_fetch_once(cache: Path, toy_config: Path,
                                        apt_here: list[str]) -> None:
    got: list[KernelSource] = []
    runs = [threading.Thread(target=lambda: got.append(
        debian_source("6.1.0-57-amd64", PROC_61, toy_config))) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert len(got) == 2 and got[0] == got[1] and got[0].note is None
    assert apt_here == ["linux-source-6.1=6.1.192-3"]


@needs_tools
def test_a_make_that_fails_names_its_log_and_keeps_the_tree(cache: Path, tmp_path: Path,
                                                            apt_here: list[str]) -> None:
    toy_deb(tmp_path, TOY_MAKEFILE.replace("grep -q CONFIG_X86_64=y", "grep -q CONFIG_NONE=y"))
    tree = cache / "source" / "linux-source-6.1_6.1.192-3"
    with pytest.raises(LabError) as err:
        debian_source("6.1.0-57-amd64", PROC_61, kernel_config(tmp_path))
    assert str(err.value) == (f"make olddefconfig failed (exit 2) in {tree}: "
                              f"see {tree / debsource.MAKE_LOG}")
    # The source is there; only the scripts are missing, and the next fetch tries again.
    later = debian_source("6.1.0-57-amd64", PROC_61, kernel_config(tmp_path), fetch=False)
    assert later.dirs == (tree,) and later.gdb_scripts is None
    assert apt_here == ["linux-source-6.1=6.1.192-3"]


# What apt-get download says when the mirror cannot be reached, and when its lists name
# a version the mirror no longer has.
UNREACHABLE = ("E: Failed to fetch http://deb.debian.org/debian-security/pool/updates/main/l/"
               "linux/linux-source-6.1_6.1.192-3_all.deb  Temporary failure resolving "
               "'deb.debian.org'")
GONE = ("E: Failed to fetch http://deb.debian.org/debian-security/pool/updates/main/l/linux/"
        "linux-source-6.1_6.1.192-3_all.deb  404  Not Found [IP: 151.101.2.132 80]")


def test_a_failed_download_leaves_nothing(cache: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []

    def download(package: str, into: Path, version: str | None = None) -> Path:
        (into / "partial").write_text("x")
        raise LabError(f"apt-get download {package}={version} failed: {said[-1]}")

    monkeypatch.setattr(debsource, "apt_cache", apt_reply)
    monkeypatch.setattr(debsource, "apt_download", download)
    said.append(UNREACHABLE)
    with pytest.raises(LabError, match="Temporary failure resolving"):
        debian_source("6.1.0-57-amd64", PROC_61, kernel_config(tmp_path))
    assert [p.name for p in (cache / "source").iterdir()] == [".linux-source-6.1_6.1.192-3.lock"]
    said.append(GONE)
    assert debian_source("6.1.0-57-amd64", PROC_61, kernel_config(tmp_path)) == KernelSource(
        version="6.1.192-3", note="Debian has no linux-source-6.1 6.1.192-3 any more (apt-get "
        "download: 404 Not Found; apt-get update?): no source is shown for this kernel")
    assert [p.name for p in (cache / "source").iterdir()] == [".linux-source-6.1_6.1.192-3.lock"]


# --- a build tree: the kgdb lab kernel and a user's tree ----------------------------------


def built_tree(tmp_path: Path, scripts: bool = True, constants: bool = True) -> Path:
    """A tree laid out like ~/.cache/kdbg/kernels/kgdb-HASH: built with O= from a source
    tree its ``source`` link names; vmlinux-gdb.py links into that source tree."""
    src = tmp_path / "kernel-src" / "linux-source-6.1"
    (src / "scripts/gdb").mkdir(parents=True)
    (src / "scripts/gdb/vmlinux-gdb.py").write_text("")
    tree = tmp_path / "kgdb-e2a6e8a31297"
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "include/config").mkdir(parents=True)
    shutil.copy(HEAD_KGDB, tree / BZIMAGE)
    (tree / ".config").write_text("CONFIG_GDB_SCRIPTS=y\n")
    (tree / "include/config/kernel.release").write_text("6.1.192\n")
    (tree / "vmlinux").write_text("")
    (tree / "source").symlink_to(src)
    if scripts:
        (tree / "vmlinux-gdb.py").symlink_to(src / "scripts/gdb/vmlinux-gdb.py")
    if constants:
        (tree / "scripts/gdb/linux").mkdir(parents=True)
        (tree / "scripts/gdb/linux/constants.py").write_text("import gdb\n")
    return tree


def listing(tree: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.lstat().st_mtime_ns) for p in tree.rglob("*"))


def test_a_built_kernel_is_its_tree_and_its_source_tree(tmp_path: Path) -> None:
    tree = built_tree(tmp_path)
    before = listing(tree)
    running = image_version_string(HEAD_KGDB)
    lab = Kernel("build", "6.1.192", tree / BZIMAGE, vmlinux=tree / "vmlinux")
    want = KernelSource((tree, tmp_path / "kernel-src" / "linux-source-6.1"),
                        tree / "vmlinux-gdb.py", "6.1.192", None)
    assert ROWS["path"].source(lab, running) == want  # the row a built lab's record names
    assert ROWS["built"].source(Kernel("build", "6.1.192", tree / BZIMAGE, kdir=tree),
                                running) == want
    assert listing(tree) == before  # nothing is written into a tree


def test_a_tree_built_again_since_the_boot_says_its_lines_may_not_match(tmp_path: Path) -> None:
    tree = built_tree(tmp_path)
    got = tree_source(tree, tree / BZIMAGE, PROC_61)
    assert got.dirs and got.gdb_scripts and got.note == (
        f"{tree / BZIMAGE} is not the build that runs (#1 SMP PREEMPT_DYNAMIC Sun Dec 6 "
        "15:29:42 UTC 2026, the kernel says #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 "
        "(2026-11-26)): its lines may not match")


def test_a_users_tree_without_gdb_scripts(tmp_path: Path) -> None:
    tree = built_tree(tmp_path, scripts=False, constants=False)
    lab = Kernel("build", "6.1.192", tree / BZIMAGE)
    got = ROWS["path"].source(lab, None)
    assert got.dirs[0] == tree and got.gdb_scripts is None and got.note == (
        f"no vmlinux-gdb.py in {tree}: build it with CONFIG_GDB_SCRIPTS=y or `make scripts_gdb`")
    half = built_tree(tmp_path / "half", constants=False)
    assert ROWS["path"].source(Kernel("build", "6.1.192", half / BZIMAGE), None).note == (
        f"{half} has vmlinux-gdb.py but no scripts/gdb/linux/constants.py: run "
        "`make scripts_gdb` there")


def test_a_bzimage_alone_has_no_source(tmp_path: Path) -> None:
    image = tmp_path / "vmlinuz-6.1.0-57-amd64"
    shutil.copy(HEAD_61, image)
    assert ROWS["path"].source(Kernel("image", "6.1.0-57-amd64", image), None) == KernelSource(
        note=f"{image} is a bzImage alone, with no build tree beside it: no source lines or "
             "Linux gdb scripts (boot a build tree: --kernel TREE)")
    image.unlink()
    assert ROWS["path"].source(Kernel("image", "x", image), None).note == (
        f"the kernel image {image} is gone: no source is known")


# --- the record: a DWARF file's line ------------------------------------------------------


def test_line_text_finds_dwarf_names_relative_and_absolute(tmp_path: Path) -> None:
    first, second = tmp_path / "build", tmp_path / "src"
    (first / "include/generated").mkdir(parents=True)
    (second / "net/netfilter").mkdir(parents=True)
    (first / "include/generated/bounds.h").write_text("#define NR_PAGEFLAGS 23\n")
    core = second / "net/netfilter/core.c"
    core.write_text("int nf_hook_slow(void)\n{\n\treturn 0;   \n}\n")
    src = KernelSource((first, second))
    assert src.find("net/netfilter/core.c") == core
    assert src.line_text("./net/netfilter/core.c", 3) == "\treturn 0;"
    assert src.line_text("include/generated/bounds.h", 1) == "#define NR_PAGEFLAGS 23"
    assert src.line_text(str(core), 1) == "int nf_hook_slow(void)"
    assert [src.line_text("net/netfilter/core.c", n) for n in (0, 5)] == [None, None]
    assert src.line_text("net/core/dev.c", 1) is None
    assert src.line_text(str(tmp_path / "gone.c"), 1) is None
    core.write_text("changed\n")
    os.utime(core, ns=(1, 1))  # a new version of the file is read again
    assert src.line_text("net/netfilter/core.c", 1) == "changed"
    assert KernelSource().line_text("net/netfilter/core.c", 1) is None


def test_the_record_as_json() -> None:
    src = KernelSource((Path("/t"),), Path("/t/vmlinux-gdb.py"), "6.1.192-3", None)
    assert src.to_json() == {"dirs": ["/t"], "gdb_scripts": "/t/vmlinux-gdb.py",
                             "version": "6.1.192-3", "note": None}


# --- the face: a lab's record, and kdbg lab up / kdbg lab source --------------------------


def lab_record(kernel_kind: str, image: Path, vmlinux: Path | None = None,
               release: str = "6.1.192") -> SimpleNamespace:
    return SimpleNamespace(name="t", kernel_kind=kernel_kind, release=release, image=str(image),
                           vmlinux=str(vmlinux) if vmlinux else None, alive=False,
                           ready_at=None)


def test_kernel_source_of_a_lab_asks_its_kind(monkeypatch: pytest.MonkeyPatch, cache: Path,
                                              tmp_path: Path) -> None:
    tree = built_tree(tmp_path)
    image = tmp_path / "vmlinuz-6.1.0-57-amd64"
    shutil.copy(HEAD_61, image)
    records = {"kg": lab_record("build", tree / BZIMAGE, tree / "vmlinux"),
               "deb": lab_record("debian", image, release="6.1.0-57-amd64"),
               "old": lab_record("gone", image)}
    monkeypatch.setattr(guest.registry, "get", lambda name: records[name])
    assert guest.kernel_source("kg").gdb_scripts == tree / "vmlinux-gdb.py"
    # A lab not running: its bzImage's version string says which package it needs.
    assert guest.kernel_source("deb", fetch=False).note == (
        "linux-source-6.1 6.1.192-3 is not in the cache yet (kdbg lab source fetches it, once)")
    assert guest.kernel_source("deb", fetch=False, running=PROC_612).version == (
        "6.12.118-1~deb12u1")
    assert guest.kernel_source("old").note == (
        "lab 'old' records a kernel kind kdbg does not know (gone): no source is known")


def test_lab_up_prepares_the_source_unless_told_not_to(tmp_path: Path) -> None:
    image = tmp_path / "vmlinuz-6.1.0-57-amd64"
    shutil.copy(HEAD_61, image)
    kernel = Kernel("debian", "6.1.0-57-amd64", image)
    asked: list[tuple[Kernel, str | None]] = []

    class Kind(SimpleNamespace):
        fetches_vmlinux = True

        def debug_vmlinux(self, release: str, progress: object) -> Path:
            return Path("/v")

        def source(self, kernel: Kernel, running: str | None, **kw: object) -> KernelSource:
            asked.append((kernel, running))
            return KernelSource()

    work = lifecycle._background_work(LabConfig(), Kind(), kernel, print)  # type: ignore[arg-type]
    assert [w.what for w in work] == ["no debug vmlinux", "no kernel source"]
    for one in work:
        one.thread.start()
        one.thread.join()
    assert asked == [(kernel, image_version_string(HEAD_61))]
    assert [w.result for w in work] == [Path("/v"), KernelSource()]
    quiet = lifecycle._background_work(LabConfig(fetch_source=False, fetch_vmlinux=False),
                                       Kind(), kernel, print)  # type: ignore[arg-type]
    assert quiet == []


def test_the_source_command_prints_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    tree = Path("/c/source/linux-source-6.1_6.1.192-3")
    answers = {"default": KernelSource((tree,), tree / "vmlinux-gdb.py", "6.1.192-3"),
               "old": KernelSource(version="6.1.193-1", note="Debian has no linux-source-6.1 "
                                   "6.1.193-1 any more (it has 6.1.192-3): no source is shown "
                                   "for this kernel")}
    monkeypatch.setattr("kdbg.lab.kernel_source", lambda name, progress: answers[name])
    text = CliRunner().invoke(cli_main, ["lab", "source"])
    assert text.exit_code == 0, text.output
    assert text.output.splitlines() == [
        f"source:       {tree}",
        f"gdb scripts:  {tree}/vmlinux-gdb.py",
        "version:      6.1.192-3",
        f"in gdb:       directory {tree}; source {tree}/vmlinux-gdb.py",
    ]
    old = CliRunner().invoke(cli_main, ["lab", "source", "old"])
    assert old.output.splitlines() == [
        "source:       (none)", "gdb scripts:  (none)", "version:      6.1.193-1",
        f"note:         {answers['old'].note}"]
    js = CliRunner().invoke(cli_main, ["lab", "source", "--name", "old", "--json"])
    assert json.loads(js.output) == answers["old"].to_json()
    up = CliRunner().invoke(cli_main, ["lab", "up", "--help"])
    assert "--no-source" in up.output
