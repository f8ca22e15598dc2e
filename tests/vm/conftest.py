"""What every vm test needs, checked once before it runs: root, QEMU, virtme-ng in the
venv and Debian's kernel headers. Without them a vm test skips with the fix (or, under
the README's test command, fails), instead of erroring half-way through a boot.

``default_lab`` is the one default lab (Debian 6.1, QEMU's gdb stub) the whole session
shares: booted at its first use, under a name unique to this run, and stopped at the
end; or, with ``KDBG_TEST_LAB=NAME``, a lab already running, left running. Tests that
need another kernel or transport (6.12, the kgdb kernel) boot their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

# Unique to this run (lab names: [a-z0-9][a-z0-9-]{0,19}), so two runs never share one.
RUN_LAB = f"t{os.getpid()}"


def lab_needs() -> None:
    """Skip (or fail, under KDBG_REQUIRE_ALL=1) unless a lab can boot here."""
    need(os.geteuid() == 0, "the lab needs root (run as root, or ./run test)")
    need(shutil.which("qemu-system-x86_64") is not None,
         "qemu-system-x86_64 missing: apt-get install qemu-system-x86 (scripts/setup.sh)")
    need((Path(sys.executable).parent / "virtme-run").exists(),
         "virtme-ng missing in the venv: pip install -e .[lab] (scripts/setup.sh)")
    need(bool(list(Path("/usr/src").glob("linux-headers-*-amd64"))),
         "Debian kernel headers missing: scripts/setup.sh installs linux-headers-amd64")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of a vm test boots a lab."""
    lab_needs()


@pytest.fixture(scope="session")
def default_lab() -> Iterator[str]:
    """The name of the session's default lab (see the module's docstring)."""
    lab_needs()
    from kdbg import lab as labmod

    existing = os.environ.get("KDBG_TEST_LAB")
    if existing:
        labmod.require(existing)
        yield existing
        return
    info = labmod.up(labmod.LabConfig(name=RUN_LAB), progress=lambda m: print(m, file=sys.stderr))
    try:
        yield RUN_LAB
    finally:
        labmod.down(RUN_LAB)
        assert not Path(f"/proc/{info.pid}").exists()


def wait_until(ok: Callable[[], object], timeout: float, what: str,
               every: float = 0.1) -> None:
    """Poll ``ok`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() >= deadline:
            pytest.fail(f"not within {timeout:g} s: {what}", pytrace=False)
        time.sleep(every)


def wait_halted(lab: str, timeout: float = 60) -> None:
    """Wait until lab ``lab``'s guest stops answering its exec channel: kgdb has the
    kernel (after SysRq-G or a break-in). The console is no sign of it: kgdb's own
    "Entering KGDB" line reaches the console only once the kernel runs again."""
    from kdbg.lab import guest

    wait_until(lambda: not guest.is_running(lab, timeout=1.0), timeout,
               f"lab {lab}'s guest halted in kgdb")


def start_time(pid: int) -> str | None:
    """``pid``'s start time from /proc (None once it is gone or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid``, with its start time (to tell a reused PID)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
    out: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        start = start_time(p)
        if start is not None:
            out[p] = start
        todo += children.get(p, [])
    return out


# -- drops in a lab, and kdbg watch against it ----------------------------------

KDBG = [sys.executable, "-m", "kdbg"]


@contextlib.contextmanager
def udp_drops(lab: str, port: int, every: float) -> Iterator[None]:
    """A DROP rule for UDP to ``port`` in lab ``lab``'s guest, and a datagram into it
    every ``every`` seconds, for as long as the block runs; both gone after it."""
    from kdbg import lab as labmod

    rule = ["INPUT", "-p", "udp", "--dport", str(port), "-j", "DROP"]
    traffic = None
    try:
        done = labmod.run(lab, ["iptables", "-A", *rule])
        assert done.status == 0, done.stderr
        traffic = labmod.stream(lab, ["bash", "-c", f"while :; do echo x > "
                                      f"/dev/udp/127.0.0.1/{port}; sleep {every:g}; done"])
        yield
    finally:
        if traffic is not None:
            traffic.close()
        with contextlib.suppress(Exception):
            labmod.run(lab, ["iptables", "-D", *rule])


def kdbg_json(*args: str, timeout: float = 900) -> tuple[int, list[dict[str, Any]], str]:
    """``kdbg watch --json ARGS``: exit status, its JSON records, its stderr."""
    proc = subprocess.run([*KDBG, "watch", "--json", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, recs, proc.stderr


def of(recs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The records of type ``kind``."""
    return [r for r in recs if r["type"] == kind]


def netfilter_break(recs: list[dict[str, Any]], callee: str, port: int,
                    err: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one ``armed`` and the one ``hit`` record of ``watch --reason NETFILTER_DROP
    --break``, checked: armed (allowed) at nft_do_chain's call to ``callee`` (the
    kernel's drop function), and the hit at that call with the skb going to ``port``."""
    armed = of(recs, "armed")
    assert len(armed) == 1, err
    assert armed[0]["caller"].startswith("nft_do_chain+0x")
    assert armed[0]["callee"] == callee
    assert armed[0]["guard"]["verdict"] == "allow"
    hits = of(recs, "hit")
    assert len(hits) == 1, err
    hit = hits[0]
    assert hit["symbol"] == "nft_do_chain" and int(hit["address"], 16) == int(
        armed[0]["call_addr"], 16)
    assert hit["skb"]["dport"] == port and hit["skb"]["daddr"] == "127.0.0.1"
    return armed[0], hit


def gdbs_on(lab: str) -> list[int]:
    """gdb processes whose command line names the lab's gdb endpoint (there must be none
    after kdbg ends)."""
    from kdbg import lab as labmod

    endpoint = labmod.gdb_endpoint(lab).split(":", 1)[1].encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
                if b"gdb" in cmd.split(b" ")[0] and endpoint in cmd:
                    pids.append(int(d.name))
    return pids
