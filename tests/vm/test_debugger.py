"""The debugger against the lab's real QEMU gdb stub (Debian 6.1, TCG).

The session's default lab serves it (tests/vm/conftest.py; or an already running one
named in $KDBG_TEST_LAB). Drops are made in the guest with UDP to a closed port on its
loopback, which the kernel drops in __udp4_lib_rcv with
kfree_skb_reason(skb, SKB_DROP_REASON_NO_SOCKET).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import need
from tests.vm.conftest import check_the_stop, default_sigint, lab_name, udp_drops, wait_halted

SEND_UDP = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.sendto(b'kdbg', ('127.0.0.1', 9))")
KDBG = [sys.executable, "-m", "kdbg"]


@pytest.fixture(scope="session")
def lab(default_lab: str) -> str:
    """The session's default lab (tests/vm/conftest.py)."""
    return default_lab


@pytest.fixture(scope="session")
def target(lab: str):  # type: ignore[no-untyped-def]
    from kdbg.debugger import from_lab

    t = from_lab(lab)
    need(t.vmlinux is not None, "the lab has no debug vmlinux (linux-image-*-dbg)")
    return t


def drop(lab: str) -> None:
    from kdbg.lab import guest

    guest.run(lab, ["python3", "-c", SEND_UDP], timeout=None).check()


def drop_later(lab: str, delay: float = 0.5) -> threading.Thread:
    """Make a drop from a thread: the guest may be stopped at a breakpoint meanwhile."""

    def go() -> None:
        time.sleep(delay)
        drop(lab)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th


def drop_location(lab: str) -> int:
    """The location the kfree_skb tracepoint reports for our drop (raw, not hashed).

    Other IPv4 drops may land in the same window (the exec channel's own TCP), so the
    one in __udp4_lib_rcv, by the guest's kallsyms, is ours.
    """
    from kdbg.lab import guest
    from kdbg.symbols.kallsyms import Kallsyms

    ksyms = Kallsyms.parse(guest.kallsyms(lab))
    script = (
        "cd /sys/kernel/tracing && echo 0 > options/hash-ptr && echo > trace && "
        "echo 1 > events/skb/kfree_skb/enable && "
        f"python3 -c \"{SEND_UDP}\" && sleep 0.5 && "
        "echo 0 > events/skb/kfree_skb/enable && cat trace"
    )
    out = guest.run(lab, ["sh", "-c", script], timeout=120).check().stdout.decode()
    for line in out.splitlines():
        # (with hash-ptr off this kernel prints the reason empty)
        if "kfree_skb:" in line and "protocol=2048" in line:
            loc = int(line.split("location=")[1].split()[0], 16)
            if ksyms.lookup(loc).symbol == "__udp4_lib_rcv":
                return loc
    raise AssertionError(f"no IPv4 drop in __udp4_lib_rcv in the guest's trace:\n{out}")


def assert_clean(target, lab: str) -> None:  # type: ignore[no-untyped-def]
    """Reconnect: the target is running, and a drop no longer stops it."""
    from kdbg.debugger import Session
    from kdbg.errors import GdbTimeout

    with Session.connect(target.endpoint, kallsyms=target.kallsyms, timeout=60) as s:
        s.run.resume()
        th = drop_later(lab, 0.2)
        with pytest.raises(GdbTimeout):
            s.run.wait_stop(6)
        th.join(30)
        assert not th.is_alive(), "the guest did not run the drop: is it stopped?"


def test_break_at_drop_site_backtrace_and_continue(lab: str, target) -> None:  # type: ignore[no-untyped-def]
    from kdbg.debugger import Session

    location = drop_location(lab)
    with Session.connect(target.endpoint, kallsyms=target.kallsyms, vmlinux=target.vmlinux,
                         timeout=180) as s:
        assert s.state.has_dwarf
        s.run.resume()
        site, bp = s.run.break_drop_site(location)
        assert site.callee == "kfree_skb_reason"
        assert site.call_addr + site.call_len == location
        assert site.caller.startswith("__udp4_lib_rcv+")
        th = drop_later(lab)
        stop = s.run.wait_stop(120)
        assert stop.hit and stop.breakpoint == bp.number
        assert stop.address == site.call_addr and stop.symbol == "__udp4_lib_rcv"
        names = [f.symbol for f in stop.backtrace]
        assert names[:2] == ["__udp4_lib_rcv", "udp_rcv"], names
        assert "ip_local_deliver_finish" in names
        assert stop.backtrace[0].file and stop.backtrace[0].file.endswith("udp.c")
        skb, reason = s.inspect.read_args(2)
        assert skb >= 0xFF00000000000000  # a kernel pointer: the skb, still alive
        assert reason > 0
        s.run.resume()  # continue: the guest finishes the send
        th.join(60)
        assert not th.is_alive()
        report = s.close()
    assert report.ok, report
    assert_clean(target, lab)


def test_sigint_while_waiting_leaves_target_clean(lab: str, target) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(
        [*KDBG, "gdb", "break", "kfree_skb_reason", "--gdb", str(target.endpoint),
         "--kallsyms", str(target.kallsyms), "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        line = ""
        while "armed" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
        assert "armed" in line, line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "WARNING" not in err, err
    assert_clean(target, lab)


def test_gdb_killed_gives_clean_error_and_running_target(lab: str, target) -> None:  # type: ignore[no-untyped-def]
    from kdbg.debugger import GdbDied, Session
    from kdbg.errors import KdbgError

    s = Session.connect(target.endpoint, kallsyms=target.kallsyms, timeout=60)
    try:
        s.run.break_at("kfree_skb_reason")
        s.run.resume()
        os.kill(s.gdb.pid, signal.SIGKILL)
        with pytest.raises(GdbDied) as info:
            s.run.wait_stop(20)
        assert isinstance(info.value, KdbgError)
    finally:
        report = s.close()
    assert report.ok, report
    assert any("fresh gdb" in step for step in report.steps), report.steps
    assert_clean(target, lab)


def test_udp_transport_through_relay(lab: str, target) -> None:  # type: ignore[no-untyped-def]
    """gdb's udp: transport, end to end, via a relay to QEMU's stub. The guard sees KGDBoE,
    so the drop function is refused and a non-networking function is used, as KGDBoE would."""
    from kdbg.debugger import Session, UdpRelay
    from kdbg.guard.decision import BreakpointRefused

    with UdpRelay(target.endpoint) as relay:
        with Session.connect(relay.endpoint, kallsyms=target.kallsyms, timeout=60) as s:
            assert s.state.endpoint.kind == "udp" and s.state.transport == "kgdboe"
            assert s.inspect.registers(["rip"])["rip"] >= 0xFFFFFFFF80000000
            with pytest.raises(BreakpointRefused):
                s.run.break_at("kfree_skb_reason")
            assert not s.state.breakpoints
            bp = s.run.break_at("do_sys_openat2")
            s.run.resume()
            th = drop_later(lab)  # the guest's python3 opens files
            stop = s.run.wait_stop(120)
            assert stop.hit and stop.breakpoint == bp.number
            assert stop.symbol == "do_sys_openat2" and stop.offset == 0
            # no DWARF here: frame 1 is kept only if it follows a call to do_sys_openat2
            assert stop.backtrace[0].symbol == "do_sys_openat2"
            assert all(f.symbol for f in stop.backtrace)
            s.run.delete(bp)
            s.run.resume()
            report = s.close()
        th.join(60)
    assert report.ok, report
    assert_clean(target, lab)


def test_interactive_handoff(lab: str, target) -> None:  # type: ignore[no-untyped-def]
    import pexpect

    child = pexpect.spawn(
        KDBG[0], [*KDBG[1:], "gdb", "attach", "--gdb", str(target.endpoint),
                  "--kallsyms", str(target.kallsyms)],
        timeout=60, encoding="utf-8",
    )
    try:
        child.expect(r"Ctrl-\]")
        child.expect(r"\(gdb\) ")
        child.sendline("kdbg-sym $pc")
        child.expect(r"0x[0-9a-f]+ [a-z_][\w.]*\+0x[0-9a-f]+")
        child.sendline("kdbg-done")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "target running, no kdbg breakpoints" in (child.before or "")
    assert_clean(target, lab)


@pytest.mark.slow
def test_kgdboc_on_kgdb_kernel() -> None:
    from kdbg import lab as labmod
    from kdbg.lab import build, guest

    need(os.geteuid() == 0, "the lab needs root")
    if build.cached_build() is None:
        # An opt-in, like the build itself (tests/vm/test_lab_kconfig.py): CI runs this
        # once the kernel is cached, and never starts an 18-minute build.
        pytest.skip("no kgdb lab kernel: run kdbg lab build-kernel (about 18 min on 2 cores)")
    from kdbg.debugger import Session, from_lab

    name = lab_name("dbg")
    labmod.up(labmod.LabConfig(name=name, kernel="built", transport="kgdboc", cpus=1))
    try:
        t = from_lab(name)
        assert t.interrupter is not None
        t.interrupter()  # SysRq-G: kgdb takes the kernel and waits for gdb
        wait_halted(name)
        with Session.connect(t.endpoint, kallsyms=t.kallsyms, vmlinux=t.vmlinux,
                             interrupter=t.interrupter, timeout=120) as s:
            assert s.state.transport == "kgdboc"
            where = s.inspect.registers(["rip"])["rip"]
            assert s.inspect.symbolize(where)[0] == "kgdb_breakpoint"
            s.run.break_at("tcp_v4_rcv")
            s.run.resume()
            poked: dict[str, object] = {}

            def poke() -> None:  # a TCP connect in the guest: runs into tcp_v4_rcv
                try:
                    poked["status"] = guest.run(name, ["python3", "-c", (
                        "import socket; s = socket.socket(); s.settimeout(5); "
                        "s.connect_ex(('127.0.0.1', 9))")], timeout=None).status
                except Exception as err:  # noqa: BLE001 - asserted below, in the test's thread
                    poked["error"] = err

            th = threading.Thread(target=poke, daemon=True)
            th.start()
            stop = s.run.wait_stop(120)
            assert stop.symbol == "tcp_v4_rcv", stop
            # a built kernel's files read relative to its tree, as Debian's do
            assert stop.backtrace[0].file == "net/ipv4/tcp_ipv4.c", stop.backtrace[0]
            report = s.close()
        assert report.ok, report
        th.join(120)  # the resumed guest finishes the connect; the thread never outlives the lab
        assert not th.is_alive() and poked == {"status": 0}, poked
    finally:
        labmod.down(name)


@pytest.mark.slow
def test_the_stop_on_the_kgdb_kernel_over_kgdboc() -> None:
    """The prompt at a NETFILTER_DROP stop on the built kgdb kernel, over kgdboc: its own
    tree's source lines and gdb scripts (CONFIG_GDB_SCRIPTS=y), kdbg's commands, and a
    next that stays in the stopped context (kgdb holds the other CPUs while it steps)."""
    from kdbg import lab as labmod
    from kdbg.lab import build

    need(os.geteuid() == 0, "the lab needs root")
    if build.cached_build() is None:
        pytest.skip("no kgdb lab kernel: run kdbg lab build-kernel (about 18 min on 2 cores)")
    name = lab_name("dbgp")
    labmod.up(labmod.LabConfig(name=name, kernel="built", transport="kgdboc"))
    try:
        with udp_drops(name, 5581, every=1):
            check_the_stop(name, 5581)
    finally:
        labmod.down(name)


def test_a_guest_left_stopped_by_a_dead_debugger_is_attached_and_resumed(lab: str,
                                                                         target) -> None:  # type: ignore[no-untyped-def]
    """A gdb attaches to the stub (QEMU stops the guest) and is killed: the guest stays
    halted and its exec channel cannot answer. kdbg attaches anyway, from the facts it
    kept for this boot (kallsyms, module sections, BTF, blocklist), says so, and the
    guest runs again when the session ends."""
    from kdbg import lab as labmod
    from kdbg.debugger import from_lab
    from kdbg.debugger.run import open_session
    from kdbg.lab import guest

    info = labmod.require(lab)
    with open_session(from_lab(lab), timeout=60):  # an earlier session: kdbg keeps facts
        pass
    dead = subprocess.Popen(["gdb", "--nx", "-q", "-ex", f"target remote {info.gdb_target}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while guest.is_running(lab, timeout=1.0):
            assert time.monotonic() < deadline, "gdb did not stop the guest"
    finally:
        dead.kill()  # no detach: the guest stays halted
        dead.wait(10)
    assert not guest.is_running(lab)
    notes: list[str] = []
    started = time.monotonic()
    stopped = from_lab(lab)
    assert stopped.stopped and stopped.kallsyms is not None and stopped.kallsyms.exists()
    with open_session(stopped, timeout=60, progress=notes.append) as s:
        assert time.monotonic() - started < 60
        assert not s.state.running
        assert s.inspect.symbolize(s.state.kallsyms.symbol("kfree_skb_reason").address)[0] == \
            "kfree_skb_reason"  # type: ignore[union-attr]
    assert any("already stopped" in n for n in notes), notes
    assert guest.is_running(lab, timeout=10.0)
    drop(lab)  # and it works as before
