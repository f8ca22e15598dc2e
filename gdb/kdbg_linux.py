"""gdb-side helper: Linux's own gdb scripts (the kernel tree's vmlinux-gdb.py), made to
work in a kdbg session. kdbg sources it right after them.

Command:
  kdbg-linux qemu|kgdb   tell Linux's helpers which stub they talk to

Linux's helpers guess their stub by probing it: QEMU answers ``Qqemu.sstepbits``, and
kgdb is taken for kgdb only when gdb's thread 2 is a ``shadowCPU0``, which it is not on
every kernel, so $lx_current() and $lx_per_cpu() then say "obtaining the current CPU is
not yet supported with this gdb server". kdbg knows its transport and says it.

On kgdb, Linux 6.1's ``get_current_cpu`` takes the task's pid from ``ptid[2]`` of gdb's
thread, which gdb 13 leaves 0 for a remote thread (the pid is ``ptid[1]``): it answered
with CPU 0's task whatever CPU had stopped. Later kernels' own scripts (6.12's
linux/cpus.py) ask kgdb instead: the CPU in kgdb is ``kgdb_active``. kdbg does the same
on kernels whose scripts do not.
"""

from __future__ import annotations

from typing import Any

import gdb  # type: ignore[import-not-found]

SERVERS = ("qemu", "kgdb")


def _cpu_in_kgdb(get_current_cpu: Any) -> Any:
    """``get_current_cpu`` that, on kgdb, answers the CPU kgdb holds (kgdb_active)."""
    def wrapped() -> Any:
        import linux.utils  # type: ignore[import-not-found]  # noqa: PLC0415

        if linux.utils.get_gdbserver_type() == linux.utils.GDBSERVER_KGDB:
            return int(gdb.parse_and_eval("kgdb_active.counter"))
        return get_current_cpu()

    wrapped.kdbg = True  # type: ignore[attr-defined]
    return wrapped


class _Linux(gdb.Command):  # type: ignore[misc]
    """kdbg-linux qemu|kgdb: tell Linux's gdb helpers which stub gdb talks to."""

    def __init__(self) -> None:
        super().__init__("kdbg-linux", gdb.COMMAND_SUPPORT)

    def invoke(self, arg: str, from_tty: bool) -> None:
        server = arg.strip()
        if server not in SERVERS:
            raise gdb.GdbError("usage: kdbg-linux qemu|kgdb")
        try:
            import linux.cpus  # type: ignore[import-not-found]  # noqa: PLC0415
            import linux.utils  # type: ignore[import-not-found]  # noqa: PLC0415
        except ImportError as err:
            raise gdb.GdbError(f"kdbg-linux: Linux's gdb scripts are not loaded ({err})"
                               ) from None
        linux.utils.gdbserver_type = getattr(linux.utils, f"GDBSERVER_{server.upper()}")
        helper = getattr(linux.cpus, "get_current_cpu", None)
        if helper is not None and not getattr(helper, "kdbg", False):
            linux.cpus.get_current_cpu = _cpu_in_kgdb(helper)


_Linux()
