"""The lab for real: boots Debian's 6.1 kernel under TCG and uses it from the host.

The session's default lab (tests/vm/conftest.py) serves the module; one more
(``lab_name("oe2")``, a KGDBoE-wired lab on the same stock kernel) is booted next to it
to cover coexistence, the KGDBoE network plumbing, a lab whose QEMU died, and ``down``. Every
lab and namespace started here is stopped here. ``KDBG_TEST_HALT_SECONDS`` sets how
long the guest is held stopped by gdb under a running stream (default 60).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import clone_reachable_by_others, need
from tests.vm.conftest import lab_name, lab_needs

KDBG = [sys.executable, "-m", "kdbg"]
HALT = float(os.environ.get("KDBG_TEST_HALT_SECONDS", "60"))


def kdbg(*args: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KDBG, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def lab(default_lab: str) -> str:
    """The session's default lab (tests/vm/conftest.py)."""
    return default_lab


def test_exec_runs_in_the_debian_61_guest(lab: str) -> None:
    r = kdbg("lab", "exec", lab, "--", "uname", "-r")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"6\.1\.0-\d+-amd64\n", r.stdout)
    r = kdbg("lab", "exec", lab, "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 5")
    assert (r.returncode, r.stdout, r.stderr) == (5, "to-out\n", "to-err\n")


def test_guest_is_ready_for_the_tracer(lab: str) -> None:
    from kdbg.lab import guest

    out = guest.run(lab, ["sh", "-c", "ls /sys/kernel/tracing/events/skb/kfree_skb/format; "
                                      "readlink -f /lib/modules/$(uname -r)/build; "
                                      "ip -4 -br addr show dev eth0"]).check().stdout.decode()
    assert "/sys/kernel/tracing/events/skb/kfree_skb/format" in out
    assert re.search(r"/usr/src/linux-headers-6\.1\.0-\d+-amd64", out)
    assert "10.0.2.15/24" in out


def test_tracer_in_the_guest_sees_23_drops_made_in_the_guest(lab: str) -> None:
    """`kdbg watch --json` inside the guest, 23 UDP datagrams to a closed port there."""
    send = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "for _ in range(23):\n s.sendto(b'kdbg',('127.0.0.1',5555)); time.sleep(0.05)\n")
    r = kdbg("lab", "exec", lab, "--", "kdbg", "watch", "--json", "--count", "23",
             "--proto", "udp", "--dport", "5555", "--duration", "240",
             "--cmd", f"python3 -c {shlex.quote(send)}", timeout=600)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    drops = [e for e in events if e["type"] == "drop"]
    assert len(drops) == 23, r.stdout
    for e in drops:
        assert e["reason"] == "NO_SOCKET" and e["symbol"] == "__udp4_lib_rcv"
        assert (e["daddr"], e["dport"], e["proto"], e["ifname"]) == ("127.0.0.1", 5555, "udp", "lo")


def test_path_tracer_in_the_61_guest_follows_packets_to_their_drop(lab: str) -> None:
    """`kdbg path` on Debian's 6.1 (its own BTF offsets and tracepoint formats): 3
    datagrams to a closed port, each followed over lo to NO_SOCKET in __udp4_lib_rcv."""
    send = ("for i in 1 2 3; do echo kdbg > /dev/udp/127.0.0.1/5556; sleep 0.3; done")
    r = kdbg("lab", "exec", lab, "--", "kdbg", "path", "--json", "--count", "3",
             "--proto", "udp", "--dport", "5556", "--duration", "240",
             "--cmd", f"bash -c {shlex.quote(send)}", timeout=600)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    ends = [e for e in recs if e["type"] == "end"]
    assert [e["packet"] for e in ends] == [1, 2, 3], r.stdout
    for end in ends:
        assert (end["fate"], end["reason"]) == ("dropped", "NO_SOCKET")
        assert end["location"].startswith("__udp4_lib_rcv+0x")
        hops = [h["tracepoint"] for h in recs
                if h["type"] == "hop" and h["packet"] == end["packet"]]
        assert hops[0] == "net:net_dev_queue" and "net:netif_receive_skb" in hops, hops
    first = next(h for h in recs if h["type"] == "hop")
    assert (first["ifname"], first["dport"], first["daddr"]) == ("lo", 5556, "127.0.0.1")


def test_gdb_reads_registers_from_the_stub_and_the_guest_runs_on(lab: str) -> None:
    from kdbg import lab as labmod
    from kdbg.lab import guest

    info = labmod.require(lab)
    assert info.gdb_endpoint == f"unix:{info.state_dir}/gdb.sock"
    up1 = float(guest.run(lab, ["cat", "/proc/uptime"]).check().stdout.split()[0])
    r = subprocess.run(["gdb", "--nx", "-batch", "-ex", f"target remote {info.gdb_target}",
                        "-ex", "info registers rip", "-ex", "detach"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rip = int(re.search(r"^rip\s+(0x[0-9a-f]+)", r.stdout, re.M).group(1), 16)  # type: ignore[union-attr]
    assert rip >= 0xFFFFFFFF80000000  # in the kernel
    assert "detached" in r.stdout
    up2 = float(guest.run(lab, ["cat", "/proc/uptime"]).check().stdout.split()[0])
    assert up2 > up1


def test_kallsyms_and_kaslr_reach_the_host(lab: str) -> None:
    from kdbg.lab import guest

    state = guest.kaslr(lab)
    assert (state.enabled, state.offset) == (False, 0)  # nokaslr with the gdb stub
    addr = guest.symbol_address(lab, "kfree_skb_reason")
    assert 0xFFFFFFFF81000000 <= addr < 0xFFFFFFFFC0000000
    assert " T kfree_skb_reason\n" in guest.kallsyms(lab)
    assert guest.vmlinux(lab).name.startswith("vmlinux-6.1.0-")


def test_stream_pauses_while_gdb_holds_the_guest_and_then_goes_on(lab: str) -> None:
    from kdbg import lab as labmod
    from kdbg.lab import guest

    info = labmod.require(lab)
    arrivals: list[tuple[float, bytes]] = []
    held: dict[str, float] = {}
    flowing = threading.Event()  # the stream has delivered its first lines

    def hold() -> None:
        assert flowing.wait(120), "the stream never started"
        held["start"] = time.monotonic()
        subprocess.run(["gdb", "--nx", "-batch", "-ex", f"target remote {info.gdb_target}",
                        "-ex", f"shell sleep {HALT}", "-ex", "detach"],
                       capture_output=True, timeout=HALT + 120)
        held["end"] = time.monotonic()

    t = threading.Thread(target=hold)
    t.start()
    script = "for i in $(seq 1 30); do echo $i; sleep 0.5; done"
    with guest.stream(lab, ["sh", "-c", script]) as s:
        for chunk in s:
            arrivals.append((time.monotonic(), chunk.data))
            if len(b"".join(d for _, d in arrivals).split()) >= 4:
                flowing.set()
    t.join()
    assert s.status == 0
    assert b"".join(d for _, d in arrivals).split() == [str(i).encode() for i in range(1, 31)]
    assert held["end"] - held["start"] >= HALT
    during = [d for at, d in arrivals if held["start"] + 2 < at < held["end"] - 1]
    assert during == []  # the stream paused, and nothing was lost
    assert arrivals[-1][0] > held["end"]


def test_ctrl_c_on_lab_exec_stops_the_remote_command(lab: str) -> None:
    from kdbg.lab import guest

    proc = subprocess.Popen([*KDBG, "lab", "exec", lab, "--", "sh", "-c",
                             "echo $$; exec sleep 600"], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 128 + signal.SIGINT
    r = guest.run(lab, ["sh", "-c", f"kill -0 {pid} 2>/dev/null && echo alive || echo gone"])
    assert r.stdout == b"gone\n"


def test_console_is_a_root_shell(lab: str) -> None:
    from kdbg.lab import guest

    child = guest.console(lab)
    try:
        child.sendline(b"echo kdbg-$((6*7)); uname -r")
        child.expect(rb"kdbg-42\r?\n6\.1\.0-\d+-amd64", timeout=60)
    finally:
        child.close()


def test_up_refuses_a_name_in_use(lab: str) -> None:
    r = kdbg("lab", "up", "--name", lab)
    assert r.returncode == 2 and "already running" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_second_lab_kgdboe_plumbing_dead_detection_and_down(lab: str) -> None:
    """A second lab next to the first: its e1000 answers UDP from the lab's own netns
    (the path KGDBoE needs; without a kgdboe.ko this is as far as it can be tested),
    then its QEMU is killed: status says dead, exec fails cleanly, down cleans up."""
    from kdbg import lab as labmod
    from kdbg.errors import LabLost
    from kdbg.lab import guest, netns

    name = lab_name("oe2")
    with __import__("contextlib").suppress(Exception):
        labmod.down(name)
    cfg = labmod.LabConfig(name=name, transport="kgdboe", require_kgdb=False, cpus=1, memory="768M")
    info = labmod.up(cfg, progress=lambda m: print(m, file=sys.stderr))
    try:
        assert info.netns == f"kdbg-{name}" and netns.exists(info.netns)
        assert info.gdb_endpoint == "udp:10.213.0.2:31337"
        assert labmod.require(lab).alive  # the first lab is untouched
        echo = ("import socket\ns=socket.socket(2,2)\ns.bind(('10.213.0.2',31337))\n"
                "print('bound',flush=True)\nd,a=s.recvfrom(100)\ns.sendto(d[::-1],a)\n")
        with guest.stream(name, ["python3", "-c", echo]) as server:
            chunks = iter(server)
            assert next(chunks).data == b"bound\n"
            ask = ("import socket\ns=socket.socket(2,2)\ns.settimeout(20)\n"
                   "s.sendto(b'kgdboe',('10.213.0.2',31337))\nprint(s.recvfrom(100)[0])\n")
            r = subprocess.run(["ip", "netns", "exec", info.netns, sys.executable, "-c", ask],
                               capture_output=True, text=True, timeout=60)
            assert r.stdout.strip() == "b'eobdgk'", r.stderr
            list(chunks)
        assert server.status == 0

        os.kill(info.pid, signal.SIGKILL)  # the QEMU this test started
        deadline = time.monotonic() + 30
        while labmod.get(name).alive and time.monotonic() < deadline:
            time.sleep(0.1)
        r = kdbg("lab", "status", name)
        assert "DEAD" in r.stdout
        with pytest.raises(LabLost):
            guest.run(name, ["true"])
    finally:
        labmod.down(name)
    for pid in (info.pid, info.launcher_pid):
        assert pid and not Path(f"/proc/{pid}").exists()
    assert not netns.exists(f"kdbg-{name}")
    assert not Path(info.state_dir).exists()
    assert labmod.require(lab).alive


def test_a_boot_that_times_out_says_why_and_leaves_nothing() -> None:
    lab_needs()
    labs = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdbg" / "run"
    r = kdbg("lab", "up", "--name", "labfail", "--timeout", "5", "--no-vmlinux")
    assert r.returncode == 1
    assert "not ready after 5s; console (last lines):" in r.stderr
    assert "nokaslr" in r.stderr  # the console's tail (the boot stub, then the kernel)
    left = subprocess.run(["pgrep", "-f", "kdbg-labfail"], capture_output=True, text=True)
    assert left.stdout == ""
    assert not any(p.name == "labfail" for p in labs.glob("**/labs/*"))


# --- who can reach a lab ------------------------------------------------------------------

# Run as uid 65534 (nobody): tries every endpoint of a lab and reports what happened.
INTRUDER = r"""
import json, os, socket, subprocess, sys
state, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def frame(kind, payload=b""):
    return kind + len(payload).to_bytes(4, "big") + payload
def exec_with(first):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.settimeout(15)
            s.sendall(first)
            return "answered" if s.recv(4096) else "closed"
    except ConnectionResetError:
        return "closed"
    except OSError as err:
        return f"error: {err}"
run = frame(b"R", "\0".join(["0", "/", "2", "touch", marker]).encode())
out = {
    "exec, a run frame replayed without a key": exec_with(run),
    "exec, ping without a key": exec_with(frame(b"P")),
    "exec, wrong key": exec_with(frame(b"A", b"0" * 64) + run),
    "exec, short key": exec_with(frame(b"A", b"0" * 8) + run),
    "exec, huge first frame": exec_with(b"A" + (1 << 30).to_bytes(4, "big")),
}
for name in ("gdb.sock", "kgdboc.sock", "console.sock"):
    path = os.path.join(state, name)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
        out[name] = "connected"
    except OSError as err:
        out[name] = type(err).__name__
for name in ("exec.key", "console.log", "lab.json"):
    try:
        open(os.path.join(state, name)).read()
        out["read " + name] = "read"
    except OSError as err:
        out["read " + name] = type(err).__name__
gdb = subprocess.run(["gdb", "--nx", "-batch", "-ex", "target remote " + state + "/gdb.sock",
                      "-ex", "info registers rip"], capture_output=True, text=True, timeout=60)
out["gdb"] = "registers" if "rip " in gdb.stdout else (gdb.stderr.strip().splitlines() or ["?"])[0]
print(json.dumps(out))
"""


def as_nobody(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    need(shutil.which("setpriv") is not None, "setpriv missing (util-linux)")
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=timeout, cwd="/",
                          stdin=subprocess.DEVNULL)


def intrude(info: object, marker: str) -> dict[str, str]:
    r = as_nobody("/usr/bin/python3", "-c", INTRUDER, info.state_dir,  # type: ignore[attr-defined]
                  str(info.exec_port), marker)  # type: ignore[attr-defined]
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def assert_locked_out(seen: dict[str, str]) -> None:
    for key, value in seen.items():
        if key.startswith("exec"):
            assert value == "closed", (key, value)  # closed unanswered, nothing run
        elif key.endswith(".sock") or key.startswith("read "):
            assert value == "PermissionError", (key, value)
    assert "Permission denied" in seen["gdb"], seen["gdb"]


def test_no_other_user_reaches_the_labs_exec_stub_or_console(lab: str) -> None:
    """uid 65534 against a running gdbstub lab: the exec channel closes on every frame it
    can send (no key, a replayed run frame, a wrong or short key), and the stub, the
    console and the lab's files are out of reach; root's use is unchanged."""
    from kdbg import lab as labmod
    from kdbg.lab import guest

    info = labmod.require(lab)
    state = Path(info.state_dir)
    assert state.stat().st_mode & 0o777 == 0o700 and state.parent.stat().st_mode & 0o777 == 0o700
    assert (state / "exec.key").stat().st_mode & 0o777 == 0o600
    marker = f"/tmp/kdbg-intruder-{os.getpid()}"
    seen = intrude(info, marker)
    assert_locked_out(seen)
    assert guest.run(lab, ["sh", "-c", f"test -e {marker} && echo ran || echo none"]
                     ).check().stdout == b"none\n"
    console = Path(info.console_log).read_text(errors="replace")
    assert "refused a connection without the exec key" in console
    assert (state / "exec.key").read_text() not in console
    # kdbg itself, as that user: one line, exit 1, no traceback
    for args in (["lab", "status"], ["lab", "exec", lab, "--", "id"], ["lab", "up", "--name", "x"]):
        with clone_reachable_by_others():
            r = as_nobody(str(Path(sys.executable).parent / "kdbg"), *args)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "needs root" in r.stderr
    # root: exec and the stub as before
    assert guest.run(lab, ["id", "-u"]).check().stdout == b"0\n"
    r = subprocess.run(["gdb", "--nx", "-batch", "-ex", f"target remote {info.gdb_target}",
                        "-ex", "info registers rip", "-ex", "detach"],
                       capture_output=True, text=True, timeout=120)
    assert "rip " in r.stdout and "detached" in r.stdout, r.stderr


def test_no_other_user_reaches_a_kgdboc_labs_serial_line(lab: str) -> None:
    """The kgdboc serial port is a Unix socket in the same private directory: uid 65534
    cannot connect; root can. (The stock kernel has no kgdb, so only the line itself is
    exercised here; tests/vm/test_lab_kconfig.py debugs over it on the kgdb kernel.)"""
    from kdbg import lab as labmod
    from kdbg.lab import guest

    name = lab_name("sec")
    with __import__("contextlib").suppress(Exception):
        labmod.down(name)
    cfg = labmod.LabConfig(name=name, transport="kgdboc", require_kgdb=False, cpus=1,
                       memory="768M", fetch_vmlinux=False)
    info = labmod.up(cfg, progress=lambda m: print(m, file=sys.stderr))
    try:
        assert info.gdb_endpoint == f"serial:{info.state_dir}/kgdboc.sock"
        marker = f"/tmp/kdbg-intruder-{os.getpid()}"
        seen = intrude(info, marker)
        assert seen["kgdboc.sock"] == "PermissionError" and seen["gdb.sock"] == "PermissionError"
        assert_locked_out(seen)
        assert guest.run(name, ["sh", "-c", f"test -e {marker} && echo ran || echo none"]
                         ).check().stdout == b"none\n"
        with socket.socket(socket.AF_UNIX) as s:  # root reaches the serial line
            s.connect(info.gdb_target)
    finally:
        labmod.down(name)
    assert not Path(info.state_dir).exists()
