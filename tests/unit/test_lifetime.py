"""Children die with kdbg, even when kdbg is killed with SIGKILL; the watchdog goes
when told, and releases (or says the target is gone) when kdbg dies without a word."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.watchdog import Watchdog, release
from tests.conftest import need

PARENT = """
import sys, time
from kdbg.debugger.gdbproc import GdbProcess
g = GdbProcess("gdb")
print(g.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_gdb_dies_with_a_sigkilled_kdbg() -> None:
    need(shutil.which("gdb") is not None, "gdb is not installed (apt-get install gdb)")
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        gdb_pid = int(parent.stdout.readline())
        assert _alive(gdb_pid)
        parent.kill()  # SIGKILL: no clean-up code of kdbg runs
        parent.wait(5)
        assert _gone_within(gdb_pid, 1.0), "gdb outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_die_with_parent_also_for_plain_children() -> None:
    """addr2line and the lab's socat get the same preexec_fn; shown with sleep(1)."""
    code = ("import subprocess, sys; from kdbg.lifetime import die_with_parent; "
            "p = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent); "
            "print(p.pid, flush=True); import time; time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(5)
    assert _gone_within(child, 1.0)


def test_watchdog_goes_when_disarmed() -> None:
    dog = Watchdog(Endpoint.parse("tcp:127.0.0.1:1"), 0x7FFFFFF0)
    assert dog.proc.poll() is None
    t0 = time.monotonic()
    dog.disarm()
    assert dog.proc.returncode is not None and time.monotonic() - t0 < 0.5


def test_watchdog_of_a_dead_kdbg_says_gone_and_exits() -> None:
    """kdbg dies without a word (its end of the pipe closes); nothing is behind the
    endpoint any more: the watchdog gives up at once instead of retrying."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        dog = Watchdog(Endpoint.parse(f"tcp:127.0.0.1:{port}"), 0x7FFFFFF0)
        t0 = time.monotonic()
        os.close(dog._write_end)  # what the kernel does when kdbg is SIGKILLed
        dog._write_end = -1
        assert dog.proc.wait(5) == 1  # released nothing: the target is gone
        assert time.monotonic() - t0 < 2.0


def test_release_of_a_gone_target_is_immediate() -> None:
    t0 = time.monotonic()
    result = release(Endpoint.parse("unix:/nonexistent/gdb.sock"))
    assert not result.ok and result.gone and "the target is gone" in result.detail
    assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_watchdog_ignores_terminal_signals(sig: int) -> None:
    """It runs in its own session; even a signal sent to it directly does not stop it
    from doing its job (SIGINT is ignored; SIGTERM ends it, like any process)."""
    dog = Watchdog(Endpoint.parse("tcp:127.0.0.1:1"), 0x7FFFFFF0)
    try:
        assert os.getsid(dog.proc.pid) == dog.proc.pid
        if sig == signal.SIGINT:
            time.sleep(0.3)  # let it install SIG_IGN
            os.kill(dog.proc.pid, sig)
            time.sleep(0.1)
            assert dog.proc.poll() is None
    finally:
        dog.disarm()
