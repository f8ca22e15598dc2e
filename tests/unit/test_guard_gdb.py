"""gdb's ``kdbg-break``: runs the guard before ``break`` (no target needed)."""

from __future__ import annotations

import shutil
import subprocess

from kdbg.dirs import GDB_DIR
from tests.conftest import DATA, need

KALLSYMS = DATA / "guard" / "kallsyms.sample"


def _gdb(*commands: str) -> subprocess.CompletedProcess[str]:
    need(shutil.which("gdb") is not None, "gdb: run scripts/setup.sh")
    argv = ["gdb", "-nx", "-batch", "-ex", "set architecture i386:x86-64",
            "-ex", f"source {GDB_DIR / 'kdbg_guard.py'}",
            "-ex", f"kdbg-guard kallsyms {KALLSYMS}"]
    for c in commands:
        argv += ["-ex", c]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_allowed_breakpoint_is_set_refused_is_not() -> None:
    r = _gdb("kdbg-guard transport kgdboe", "kdbg-break vfs_read", "kdbg-break tcp_v4_rcv",
             "info breakpoints")
    out = r.stdout + r.stderr
    assert "Breakpoint 1 at 0xffffffff81200200" in out
    assert "kdbg-break: refused on kgdboe (kgdboe-networking); not set" in out
    assert "0xffffffff81300600" not in r.stdout.split("Num")[-1]  # not in the table


def test_force_sets_it_with_a_warning() -> None:
    r = _gdb("kdbg-guard transport kgdboe", "kdbg-break --force mod_timer", "info breakpoints")
    assert "WARNING: refused breakpoint forced" in r.stdout
    assert "0xffffffff81100400" in r.stdout.split("Num")[-1]


def test_transport_matters_and_must_be_set() -> None:
    r = _gdb("kdbg-break serial8250_get_poll_char")
    assert "set the transport first" in r.stderr
    r = _gdb("kdbg-guard transport kgdboc", "kdbg-guard check serial8250_get_poll_char",
             "kdbg-guard transport gdbstub", "kdbg-break serial8250_get_poll_char")
    assert "refuse: serial8250_get_poll_char+0x0" in r.stdout
    assert "Breakpoint 1 at 0xffffffff81200800" in r.stdout


def test_unknown_symbol_is_a_gdb_error() -> None:
    r = _gdb("kdbg-guard transport gdbstub", "kdbg-break tcp_v4_rcx")
    assert "unknown kernel symbol 'tcp_v4_rcx'" in r.stderr and "closest: tcp_v4_rcv" in r.stderr


def test_kgdb_refuses_what_reads_a_dead_tasks_stack() -> None:
    """On kgdb, ``info threads`` and ``thread apply`` make kgdb read every task's saved
    frame, and a task that exited but is not reaped has none: kdbg's hooks refuse them
    in one line, before gdb sends anything."""
    r = _gdb(f"source {GDB_DIR / 'kdbg_kgdb.gdb'}", "info threads")
    assert "kdbg: 'info threads' is refused on kgdb" in r.stderr and "use lx-ps" in r.stderr
    assert "No threads." not in r.stdout + r.stderr  # the command itself never ran
    assert "Traceback" not in r.stderr
    r = _gdb(f"source {GDB_DIR / 'kdbg_kgdb.gdb'}", "thread apply all bt")
    assert "kdbg: 'thread apply all' is refused on kgdb" in r.stderr
    r = _gdb(f"source {GDB_DIR / 'kdbg_kgdb.gdb'}", "thread apply 1-3 bt")
    assert "kdbg: 'thread apply' is refused on kgdb" in r.stderr


def test_the_step_hooks_ask_the_guard() -> None:
    """KGDBoE's step hooks run the guard's step check first; without a stopped target it
    has nothing to judge and gdb says so itself."""
    r = _gdb("kdbg-guard transport kgdboe", f"source {GDB_DIR / 'kdbg_steps.gdb'}", "next")
    assert "The program is not being run." in r.stderr, r.stderr
    r = _gdb("kdbg-guard transport kgdboe", "kdbg-guard step-check next")
    assert r.returncode == 0 and r.stderr == "", r.stderr
