"""Source paths relative to the kernel tree, for Debian's and for out-of-tree builds."""

from __future__ import annotations

from pathlib import Path

from kdbg.symbols.sources import source_roots, tree_relative


def test_out_of_tree_build_paths_become_tree_relative(tmp_path: Path) -> None:
    src = tmp_path / "kernel-src" / "6.1.192-3" / "linux-source-6.1"
    build = tmp_path / "kernels" / "kgdb-e2a6e8a31297"
    src.mkdir(parents=True)
    build.mkdir(parents=True)
    (build / "source").symlink_to(src)
    roots = source_roots(build / "vmlinux")
    assert tree_relative(f"{src}/kernel/time/hrtimer.c", roots) == "kernel/time/hrtimer.c"
    assert tree_relative(f"{build}/include/generated/autoconf.h", roots) == \
        "include/generated/autoconf.h"
    assert tree_relative("./arch/x86/include/generated/asm/syscalls_64.h", roots) == \
        "arch/x86/include/generated/asm/syscalls_64.h"


def test_debian_names_and_outsiders_are_left_alone(tmp_path: Path) -> None:
    roots = source_roots(tmp_path / "vmlinux-6.1.0-57-amd64")
    assert tree_relative("net/ipv4/tcp_ipv4.c", roots) == "net/ipv4/tcp_ipv4.c"
    assert tree_relative("/usr/include/stdio.h", roots) == "/usr/include/stdio.h"
    assert tree_relative(None, roots) is None
    assert source_roots(None) == ()
