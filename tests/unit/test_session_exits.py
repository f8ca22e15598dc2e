"""A debug session's ends against a real QEMU stub, with no lab: QEMU started bare
(``-S``, no kernel, SeaBIOS at the reset vector), watched through QMP.

- kdbg SIGKILLed while the guest is stopped at its breakpoint: gdb dies with it, the
  watchdog reattaches and detaches, and the guest runs with no breakpoint left (a
  reset passes the old breakpoint's address without stopping);
- QEMU dying under a session: the session says the target is gone, and closes fast;
- a session nobody holds any more, never closed: closed when kdbg exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

RESET_VECTOR = 0xFFFFFFF0

CHILD = f"""
import sys, time
from kdbg.debugger.session import Session
s = Session.connect(sys.argv[1], timeout=30, watchdog=sys.argv[2] == "1")
s.run.break_at(0x{RESET_VECTOR:x}, force=True)  # no kallsyms: the guard cannot judge; forced
s.run.resume()
s.run.wait_stop(10)                 # the reset vector runs at once: stopped there
print(s.gdb.pid, flush=True)
time.sleep(60)
"""

DROPPED = f"""
import gc, sys
from kdbg.debugger.session import LIVE, Session

def stop_at_the_reset_vector() -> None:
    s = Session.connect(sys.argv[1], timeout=30, watchdog=False)  # only the exit releases
    s.run.break_at(0x{RESET_VECTOR:x}, force=True)
    s.run.resume()
    s.run.wait_stop(10)

stop_at_the_reset_vector()  # the session is dropped, never closed
gc.collect()
print(len(LIVE), "open at exit", flush=True)  # the exit closes it
"""


class Qemu:
    """A bare QEMU with its gdb stub and QMP on Unix sockets under ``root``."""

    def __init__(self, root: Path) -> None:
        self.gdb_sock, self.qmp_sock = root / "gdb.sock", root / "qmp.sock"
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "accel=tcg", "-m", "32", "-display", "none",
             "-nodefaults", "-S", "-gdb", f"unix:{self.gdb_sock},server=on,wait=off",
             "-qmp", f"unix:{self.qmp_sock},server=on,wait=off"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not (self.gdb_sock.exists() and self.qmp_sock.exists()):
            assert self.proc.poll() is None and time.monotonic() < deadline, "QEMU did not start"
            time.sleep(0.05)

    def qmp(self, command: str) -> Any:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.qmp_sock))
            f = s.makefile("rw")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply.get("return")

    def status(self) -> str:
        return str(self.qmp("query-status")["status"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[Qemu]:
    need(shutil.which("qemu-system-x86_64") is not None, "QEMU is not installed")
    need(shutil.which("gdb") is not None, "gdb is not installed (apt-get install gdb)")
    q = Qemu(tmp_path)
    yield q
    q.stop()


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def _sigkill_stopped_kdbg(qemu: Qemu, watchdog: bool) -> tuple[int, list[int]]:
    """A kdbg stopped at its breakpoint, SIGKILLed; returns gdb's PID and kdbg's children."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, f"unix:{qemu.gdb_sock}",
                              "1" if watchdog else "0"], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    assert child.stdout is not None
    gdb_pid = int(child.stdout.readline())
    assert qemu.status() == "debug"  # stopped at the breakpoint
    kids = [int(p) for p in subprocess.run(["pgrep", "-P", str(child.pid)], text=True,
                                           capture_output=True).stdout.split()]
    os.kill(child.pid, signal.SIGKILL)
    child.wait(5)
    return gdb_pid, kids


def test_sigkill_while_stopped_at_a_breakpoint_releases_the_guest(qemu: Qemu) -> None:
    gdb_pid, kids = _sigkill_stopped_kdbg(qemu, watchdog=True)
    assert _gone(gdb_pid, 1.0), "gdb outlived kdbg"
    assert len(kids) == 2 and all(_gone(p, 6.0) for p in kids), "the watchdog lingered"
    assert qemu.status() == "running"
    qemu.qmp("system_reset")  # through the reset vector again: no breakpoint there now
    time.sleep(1.0)
    assert qemu.status() == "running"


def test_qemu_dying_under_a_session_is_said_fast(qemu: Qemu) -> None:
    from kdbg.debugger.session import Session

    with Session.connect(f"unix:{qemu.gdb_sock}", timeout=30, loud=False) as s:
        s.run.resume()
        time.sleep(0.3)
        qemu.stop()
        deadline = time.monotonic() + 2
        while s.state.lost is None and time.monotonic() < deadline:
            s.listen(0.1)
        assert s.state.lost is not None and "lost its connection" in s.state.lost
        t0 = time.monotonic()
        report = s.close()
        assert time.monotonic() - t0 < 2.0
    assert not report.ok and report.target_state.startswith("gone")
    assert "the target is gone" in report.message()


def test_a_session_nobody_holds_is_closed_at_exit(qemu: Qemu) -> None:
    child = subprocess.run([sys.executable, "-c", DROPPED, f"unix:{qemu.gdb_sock}"],
                           capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0 and child.stdout == "1 open at exit\n", child.stderr
    assert qemu.status() == "running"
    qemu.qmp("system_reset")  # through the reset vector again: no breakpoint there now
    time.sleep(1.0)
    assert qemu.status() == "running"
