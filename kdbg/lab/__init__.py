"""The QEMU lab: boot a ready-to-debug VM, run commands in it, and reach its gdb endpoint.

Public API (everything raises :class:`kdbg.errors.KdbgError` subclasses: ``BadInput``
for bad input, ``LabError``/``LabTimeout`` for a lab that cannot boot, ``LabLost``
when its QEMU is gone)::

    from kdbg import lab

    info = lab.up(lab.LabConfig(name="default"), progress=print)  # boot, wait ready
    info = lab.get("default")            # LabInfo as recorded, .alive checked now
    labs = lab.status()                  # every recorded lab
    info.gdb_endpoint                    # "unix:STATE/gdb.sock", "serial:STATE/kgdboc.sock"
                                         # or "udp:IP:31337" (KGDBoE, in the lab's netns)
    info.gdb_prefix                      # [] or ["ip", "netns", "exec", "kdbg-NAME"] (KGDBoE)
    lab.gdb_endpoint("default")          # the same, by name
    lab.vmlinux("default")               # Path of the DWARF vmlinux (Debian -dbg, cached)
    src = lab.kernel_source("default")   # KernelSource: .dirs for gdb's directory,
                                         # .gdb_scripts (vmlinux-gdb.py), .version, .note
    src.line_text("net/netfilter/core.c", 615)   # a DWARF file's line, or None
    lab.kallsyms("default")              # guest /proc/kallsyms text, cached per boot
    lab.kaslr("default")                 # Kaslr(enabled, text, offset)
    lab.symbol_address("default", "kfree_skb_reason")
    status = lab.exec_("default", ["uname", "-r"], stdout=cb, stderr=cb)  # streams
    done = lab.run("default", ["uname", "-r"])              # Completed(status, stdout, stderr)
    with lab.stream("default", ["kdbg", "watch", "--json"]) as s:          # long streams
        for chunk in s: ...              # Chunk(stream="stdout"|"stderr", data=bytes)
        s.status
    lab.console("default")               # pexpect child on the serial root shell
    lab.down("default")                  # QEMU stopped (its PID only), state removed
    lab.build_kernel(progress=print)     # the kgdb lab kernel (cached by config hash)
    lab.known_kernels()                  # [KernelChoice]: what --kernel can boot, what is cached
    lab.resolve_kernel("debian:6.12")    # Kernel (fetched into the cache if its kind fetches)
    lab.kernel_help()                    # --kernel's help text, made from the table of kinds

Where it lives: the labs kdbg knows, and their records, in ``registry``; booting and
stopping in ``lifecycle`` (the command line in ``command``); the kinds of kernel that
``--kernel`` names in ``kinds`` (Debian's in ``debian``, the kgdb lab kernel in
``build``, the ``Kernel`` record and a user's tree in ``kernel``); a kernel's source
and Linux's gdb scripts in ``source`` (Debian's ``linux-source`` in ``debsource``); a
running guest in ``guest`` (over ``channel``).

The exec stream has no timers: a guest halted by a debugger pauses it, and it goes on
when the guest resumes. Leaving a stream (or Ctrl-C twice) kills the remote command.
"""

from __future__ import annotations

from kdbg.lab.build import build_kernel
from kdbg.lab.channel import Chunk, ExecSession
from kdbg.lab.guest import (
    Completed,
    Kaslr,
    console,
    exec_,
    kallsyms,
    kaslr,
    kernel_source,
    kgdboe_load,
    run,
    stream,
    symbol_address,
    vmlinux,
)
from kdbg.lab.kernel import Kernel, KernelChoice
from kdbg.lab.kinds import kernel_help, known_kernels, resolve_kernel
from kdbg.lab.lifecycle import down, dry_run, up
from kdbg.lab.registry import LabConfig, LabInfo, get, require, require_root, status
from kdbg.lab.source import KernelSource


def gdb_endpoint(name: str = "default") -> str:
    """kdbg's endpoint for lab ``name``'s kernel (``LabInfo.gdb_target`` is gdb's)."""
    return require(name).gdb_endpoint


__all__ = [
    "Chunk",
    "Completed",
    "ExecSession",
    "Kaslr",
    "Kernel",
    "KernelChoice",
    "KernelSource",
    "LabConfig",
    "LabInfo",
    "build_kernel",
    "console",
    "down",
    "dry_run",
    "exec_",
    "gdb_endpoint",
    "get",
    "kallsyms",
    "kaslr",
    "kernel_help",
    "kernel_source",
    "kgdboe_load",
    "known_kernels",
    "require",
    "require_root",
    "resolve_kernel",
    "run",
    "status",
    "stream",
    "symbol_address",
    "up",
    "vmlinux",
]
