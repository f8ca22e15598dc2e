"""Quick, clean exits of ``kdbg watch --break`` on the default lab (Debian 6.1, TCG).

SIGINT and SIGTERM in each phase (connecting, tracer starting, armed, during a hit
report, at the interactive prompt): kdbg exits within 2 s, its ``cleanup`` record is
ok, the guest still answers and no breakpoint of kdbg's is left in it, and no process
kdbg started is left. SIGKILL of kdbg (armed, and with the guest stopped at the
breakpoint): no gdb is left, and the guest runs, stopped at no breakpoint.

One lab for the module (or a running one named in $KDBG_TEST_LAB). A DROP rule for UDP
5555 in the guest and a guest-side sender that fires one datagram per line it reads, so
drops come only when a test asks. Commands are started with SIGINT at its default (a
background job of a non-interactive shell starts with it ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.vm.conftest import descendants, start_time

PORT = 5555
SENDER = ["bash", "-c", f"while read l; do echo x > /dev/udp/127.0.0.1/{PORT}; done"]
WATCH = ["watch", "--reason", "NETFILTER_DROP", "--proto", "udp", "--dport", str(PORT),
         "--break", "--json"]
EXIT_WITHIN = 2.0


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Lab:
    """The lab under test and a way to make one drop in it on demand."""

    def __init__(self, name: str) -> None:
        from kdbg import lab as labmod

        self.name = name
        self.labmod = labmod
        done = labmod.run(name, ["sh", "-c", f"iptables -C INPUT -p udp --dport {PORT} -j DROP "
                                             f"2>/dev/null || iptables -A INPUT -p udp "
                                             f"--dport {PORT} -j DROP"])
        assert done.status == 0, done.stderr
        self.sender = labmod.stream(name, SENDER, stdin=True)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        """Read the sender's output until it ends (the lab going away ends it too)."""
        from kdbg.errors import KdbgError

        with contextlib.suppress(KdbgError, OSError):
            for _ in self.sender:
                pass

    def drop(self) -> None:
        self.sender.send_stdin(b"x\n")

    def close(self) -> None:
        """End the sender and take the DROP rule out: the lab is shared with other
        modules, which expect UDP to that port to find no socket, not a rule."""
        self.sender.close()
        self.labmod.run(self.name, ["iptables", "-D", "INPUT", "-p", "udp", "--dport",
                                    str(PORT), "-j", "DROP"])

    def answers(self) -> bool:
        return bool(self.labmod.run(self.name, ["true"], timeout=20).status == 0)


@pytest.fixture(scope="module")
def lab(default_lab: str) -> Iterator[Lab]:
    """The session's default lab (tests/vm/conftest.py), with this module's sender."""
    the_lab = Lab(default_lab)
    try:
        yield the_lab
    finally:
        the_lab.close()


# -- processes ----------------------------------------------------------------


def left_over(procs: dict[int, str], within: float) -> list[str]:
    """Those of ``procs`` still running after ``within`` s, as 'PID cmdline'."""
    deadline = time.monotonic() + within
    while True:
        alive = [p for p, start in procs.items() if start_time(p) == start]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    out = []
    for p in alive:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out.append(f"{p} {cmd}")
    return out


class Kdbg:
    """``kdbg watch --break`` as a real process; its lines as they come."""

    def __init__(self, lab: Lab, *extra: str) -> None:
        argv = [sys.executable, "-m", "kdbg", *WATCH, "--lab", lab.name, *extra]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     preexec_fn=_default_sigint)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        for kind, pipe in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._pump, args=(kind, pipe), daemon=True).start()

    def _pump(self, kind: str, pipe: Any) -> None:
        for line in pipe:
            self.lines.put((kind, line.rstrip("\n")))

    def wait_for(self, needle: str, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=0.1)
            except queue.Empty:
                assert self.proc.poll() is None, f"kdbg ended before {needle!r}: {self.text()}"
                continue
            self.seen.append(item)
            if needle in item[1]:
                return
        raise AssertionError(f"no {needle!r} within {timeout:g} s: {self.text()}")

    def signal(self, sig: int) -> tuple[float, dict[int, str]]:
        """Send ``sig``; return the seconds to exit and the processes kdbg had then."""
        procs = descendants(self.proc.pid)
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(60)
        finally:
            took = time.monotonic() - t0
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return took, procs

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(line) for k, line in self.seen
                if k == "out" and line.startswith("{") and f'"type":"{kind}"' in line]

    def text(self) -> str:
        return "\n".join(line for _, line in self.seen[-30:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def kdbg(lab: Lab) -> Iterator[Callable[..., Kdbg]]:
    started: list[Kdbg] = []

    def start(*extra: str) -> Kdbg:
        started.append(Kdbg(lab, *extra))
        return started[-1]

    yield start
    for k in started:
        k.kill()


def reach_phase(k: Kdbg, lab: Lab, phase: str) -> None:
    if phase == "connecting":
        k.wait_for("connecting gdb to")
        time.sleep(1.0)  # gdb is loading the debug vmlinux
    elif phase == "tracer":
        k.wait_for("starting the tracer in the target")
        time.sleep(1.0)  # bcc is compiling in the guest
    else:
        k.wait_for("tracer attached")
        lab.drop()
        k.wait_for('"type":"armed"', timeout=120)
        if phase == "hit":
            lab.drop()
            time.sleep(0.3)  # the guest is stopped at the breakpoint, or being reported


def assert_guest_runs_clean(lab: Lab) -> None:
    """The guest answers, and a drop at the site does not stop it: a fresh gdb attaches,
    lets it run, and sees no stop while drops go through the drop site."""
    from kdbg.debugger import from_lab
    from kdbg.debugger.session import Session
    from kdbg.errors import GdbTimeout

    assert lab.answers(), "the guest does not answer: is it stopped?"
    target = from_lab(lab.name, want_vmlinux=False)
    with Session.connect(target.endpoint, kallsyms=target.kallsyms, timeout=60) as s:
        s.run.resume()
        lab.drop()
        lab.drop()
        with pytest.raises(GdbTimeout):
            s.run.wait_stop(4)
    assert lab.answers()


PHASES = ("connecting", "tracer", "armed", "hit")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", PHASES)
def test_signal_in_each_phase_exits_in_2_s_clean(lab: Lab, kdbg: Callable[..., Kdbg],
                                                  phase: str, sig: int) -> None:
    # hit: more breaks than drops, so a hit reported within reach_phase's 0.3 s does not
    # end the watch before the signal (it would find kdbg already exiting)
    k = kdbg("--break-count", "5") if phase == "hit" else kdbg()
    reach_phase(k, lab, phase)
    took, procs = k.signal(sig)
    assert took < EXIT_WITHIN, f"{phase}: {took:.2f} s to exit\n{k.text()}"
    assert k.proc.returncode == 0, k.text()
    cleanup = k.records("cleanup")
    assert len(cleanup) == 1 and cleanup[0]["ok"], k.text()
    assert procs, "kdbg had started no process (gdb, the watchdog...)?"
    assert left_over(procs, 0.5) == []
    if phase != "connecting":  # from attach on, kdbg held the guest
        assert cleanup[0]["target"] == "running, no kdbg breakpoints"
    assert_guest_runs_clean(lab)


@pytest.mark.parametrize("phase", ["armed", "hit"])
def test_sigkill_leaves_no_gdb_and_a_running_guest(lab: Lab, kdbg: Callable[..., Kdbg],
                                                   phase: str) -> None:
    """SIGKILL: nothing of kdbg's runs; gdb dies with it, and the watchdog releases the
    guest (armed: a breakpoint set; hit: the guest stopped at it)."""
    # More breaks than drops: a hit reported within the 0.3 s below does not end the
    # watch (and close gdb) before the kill.
    k = kdbg("--break-count", "5")
    reach_phase(k, lab, phase)
    names = {}
    for p in descendants(k.proc.pid):  # what each is, read while it runs
        with contextlib.suppress(OSError):
            names[p] = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]
    took, procs = k.signal(signal.SIGKILL)
    gdbs = {p: s for p, s in procs.items() if names.get(p, b"").endswith(b"gdb")}
    assert gdbs, (procs, names)
    assert left_over(gdbs, 1.0) == [], "gdb outlived a SIGKILLed kdbg"
    assert left_over(procs, 6.0) == [], "the watchdog (or a child) lingered"
    assert k.records("cleanup") == []  # kdbg itself did nothing: the watchdog did
    assert_guest_runs_clean(lab)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_at_the_interactive_prompt(lab: Lab, sig: int) -> None:
    """At gdb's prompt the terminal's Ctrl-C belongs to gdb; a signal to kdbg itself
    still ends it within 2 s, with the clean-up done."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "kdbg", *WATCH, "--lab", lab.name,
                                           "--interactive"],
                          timeout=900, preexec_fn=_default_sigint, dimensions=(40, 200))
    try:
        child.expect("tracer attached")
        lab.drop()
        child.expect('"type":"armed"', timeout=120)
        lab.drop()
        child.expect("resume the target and", timeout=120)
        time.sleep(0.5)
        procs = descendants(child.pid)
        t0 = time.monotonic()
        os.kill(child.pid, sig)
        child.expect(pexpect.EOF, timeout=30)
        took = time.monotonic() - t0
        text = (child.before or b"").decode(errors="replace")
        assert took < EXIT_WITHIN, f"{took:.2f} s\n{text}"
        cleanup = [json.loads(line[line.index("{"):]) for line in text.splitlines()
                   if '"type":"cleanup"' in line]
        assert cleanup and cleanup[-1]["ok"], text
        assert left_over(procs, 0.5) == []
    finally:
        child.close(force=True)
    assert_guest_runs_clean(lab)
