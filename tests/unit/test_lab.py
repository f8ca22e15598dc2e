"""The lab without a VM: command lines, config fragment and hash, the exec protocol, the CLI."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbg.errors import BadInput, LabError, LabLost
from kdbg.lab import agent, build, command, kernel, vm
from kdbg.lab.channel import ExecSession, run_streaming
from kdbg.lab.command import LaunchPlan, launch_argv
from kdbg.lab.kernel import Kernel

DEBIAN = Kernel("debian", "6.1.0-56-amd64", Path("/cache/root/boot/vmlinuz-6.1.0-56-amd64"))


def plan(transport: str = "gdbstub", **kw: object) -> LaunchPlan:
    base: dict[str, object] = dict(
        name="t1",
        transport=transport,
        memory="1G",
        cpus=2,
        exec_port=40001,
        console_socket=Path("/run/l/console.sock"),
        console_log=Path("/run/l/interactive.log"),
        pidfile=Path("/run/l/qemu.pid"),
        agent="/cache/kdbg/agent/kdbg-agent-0123456789ab",
        virtme_run="/venv/bin/virtme-run",
        gdb_port=40002 if transport == "gdbstub" else None,
        kgdboc_port=40003 if transport == "kgdboc" else None,
        tap_fd=7 if transport == "kgdboe" else None,
        oe_cidr="10.213.0.2/24" if transport == "kgdboe" else None,
    )
    base.update(kw)
    return LaunchPlan(**base)  # type: ignore[arg-type]


def opt_after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


# --- command line ------------------------------------------------------------------------


def test_gdbstub_command_line() -> None:
    argv = launch_argv(plan(), DEBIAN)
    assert argv[:3] == ["/venv/bin/virtme-run", "--kimg", str(DEBIAN.image)]
    assert opt_after(argv, "--name") == ["kdbg-t1"]
    assert "--disable-kvm" in argv and "--force-9p" in argv
    assert opt_after(argv, "--kopt") == ["nokaslr"]
    q = argv[argv.index("--qemu-opts") + 1 :]
    assert opt_after(q, "-gdb") == ["tcp:127.0.0.1:40002"]
    assert opt_after(q, "-pidfile") == ["/run/l/qemu.pid"]
    # ttyS1 is kgdboc's place even when unused, ttyS2 the interactive console
    assert opt_after(q, "-serial") == ["null", "chardev:kdbgcon"]
    netdev = opt_after(q, "-netdev")
    assert netdev == [
        "user,id=kdbgexec,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:40001-10.0.2.15:7022"
    ]
    script = opt_after(argv, "--script-sh")[0]
    loads, _, run = script.partition(" & exec ")
    assert loads.endswith("; ( modprobe -q virtio_net 2>/dev/null; )")
    assert shlex.split(run) == ["/cache/kdbg/agent/kdbg-agent-0123456789ab", "--exec-mac",
                                command.EXEC_MAC, "--shell-tty", "/dev/ttyS2"]


def test_no_command_line_ever_lifts_the_network_restriction() -> None:
    for transport in command.TRANSPORTS:
        joined = " ".join(launch_argv(plan(transport), DEBIAN))
        assert "restrict=off" not in joined and "restrict=no" not in joined
        assert "restrict=on" in joined
        for part in joined.split():
            if "hostfwd=" in part:
                assert "hostfwd=tcp:127.0.0.1:" in part  # only ever on the host's loopback


def test_kgdboc_command_line() -> None:
    argv = launch_argv(plan("kgdboc"), DEBIAN)
    assert opt_after(argv, "--kopt") == ["nokaslr", "kgdboc=ttyS1,115200"]
    q = argv[argv.index("--qemu-opts") + 1 :]
    assert opt_after(q, "-serial")[0] == "tcp:127.0.0.1:40003,server=on,wait=off"
    assert "-gdb" not in q


def test_kgdboe_command_line() -> None:
    argv = launch_argv(plan("kgdboe"), DEBIAN)
    q = argv[argv.index("--qemu-opts") + 1 :]
    assert "tap,id=kdbgoe,fd=7" in opt_after(q, "-netdev")
    assert f"e1000,netdev=kdbgoe,mac={command.OE_MAC}" in opt_after(q, "-device")
    script = opt_after(argv, "--script-sh")[0]
    assert "--oe-cidr 10.213.0.2/24" in script and "modprobe -q e1000" in script


def test_built_kernel_uses_kdir() -> None:
    k = Kernel("build", "6.1.192", Path("/b/arch/x86/boot/bzImage"), kdir=Path("/b"))
    argv = launch_argv(plan(append=("loglevel=7",)), k)
    assert argv[1:3] == ["--kdir", "/b"]
    assert opt_after(argv, "--kopt") == ["nokaslr", "loglevel=7"]


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Bad Name"},
        {"name": ""},
        {"name": "x" * 21},
        {"transport": "serial"},
        {"memory": "12X"},
        {"memory": "0G"},
        {"cpus": 0},
        {"boot_timeout": 0},
    ],
)
def test_bad_config_is_bad_input(change: dict[str, object]) -> None:
    with pytest.raises(BadInput):
        vm.validate(vm.LabConfig(**change))  # type: ignore[arg-type]


def test_kgdb_transports_refuse_a_kernel_without_kgdb(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("# CONFIG_KGDB is not set\nCONFIG_BPF=y\n")
    k = Kernel("image", "6.1", tmp_path / "bzImage", config=cfg)
    with pytest.raises(BadInput, match="no CONFIG_KGDB"):
        vm.check_kernel(vm.LabConfig(transport="kgdboc"), k)
    vm.check_kernel(vm.LabConfig(transport="gdbstub"), k)
    vm.check_kernel(vm.LabConfig(transport="kgdboe", require_kgdb=False), k)
    cfg.write_text("CONFIG_KGDB=y\n")
    vm.check_kernel(vm.LabConfig(transport="kgdboc"), k)


# --- kernels -----------------------------------------------------------------------------


def fake_bzimage(path: Path, version: str) -> Path:
    head = bytearray(0x400)
    head[0x202:0x206] = b"HdrS"
    head[0x20E:0x210] = (0x300).to_bytes(2, "little")  # version string at 0x300 + 0x200
    body = head + bytes(0x100) + f"{version} (builder@host) #1 SMP".encode() + b"\0"
    path.write_bytes(bytes(body))
    return path


def test_image_version_from_bzimage_header(tmp_path: Path) -> None:
    img = fake_bzimage(tmp_path / "vmlinuz-x", "6.1.0-56-amd64")
    assert kernel._image_version(img) == "6.1.0-56-amd64"
    (tmp_path / "junk").write_bytes(b"\0" * 2048)
    assert kernel._image_version(tmp_path / "junk") is None


def test_kernel_from_path(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        kernel.kernel_from_path(tmp_path / "nope")
    (tmp_path / "junk").write_bytes(b"\0" * 2048)
    with pytest.raises(BadInput, match="not a bootable"):
        kernel.kernel_from_path(tmp_path / "junk")
    with pytest.raises(BadInput, match="not a kernel build directory"):
        kernel.kernel_from_path(tmp_path)
    tree = tmp_path / "build"
    (tree / "arch/x86/boot").mkdir(parents=True)
    fake_bzimage(tree / "arch/x86/boot/bzImage", "6.1.192")
    (tree / ".config").write_text("CONFIG_KGDB=y\n")
    (tree / "vmlinux").write_bytes(b"\x7fELF")
    k = kernel.kernel_from_path(tree / "arch/x86/boot/bzImage")
    assert (k.kind, k.kdir, k.release) == ("build", tree, "6.1.192")
    assert k.vmlinux == tree / "vmlinux" and k.option("KGDB") == "y"


# --- config fragment ---------------------------------------------------------------------


def test_fragment_has_what_the_kgdb_lab_needs() -> None:
    items = {i.name: i.value for i in build.parse_fragment(build.FRAGMENT.read_text())}
    for opt in ("KGDB", "KGDB_SERIAL_CONSOLE", "DEBUG_INFO", "GDB_SCRIPTS", "DEBUG_INFO_BTF",
                "IKHEADERS", "BPF", "BPF_SYSCALL", "NETFILTER", "IP_NF_IPTABLES", "NF_TABLES",
                "NETPOLL", "ETHERNET", "NET_VENDOR_INTEL", "E1000", "9P_FS", "NET_9P_VIRTIO",
                "VIRTIO_CONSOLE", "VIRTIO_NET", "OVERLAY_FS"):
        assert items.get(f"CONFIG_{opt}") == "y", opt


def test_fragment_mismatches() -> None:
    frag = "# c\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x\"\n"
    good = "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x\"\n"
    assert build.fragment_mismatches(frag, good) == []
    bad = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n"
    assert build.fragment_mismatches(frag, bad) == [
        "CONFIG_B=m (got not set)",
        "# CONFIG_C is not set (got CONFIG_C=y)",
        'CONFIG_D="x" (got not set)',
    ]


def test_config_hash_is_stable_and_covers_every_input() -> None:
    h = build.config_hash("CONFIG_A=y\n", "6.1.192-2", "1.42")
    assert h == build.config_hash("CONFIG_A=y\n", "6.1.192-2", "1.42")
    assert len(h) == 12 and int(h, 16) >= 0
    assert h != build.config_hash("CONFIG_A=n\n", "6.1.192-2", "1.42")
    assert h != build.config_hash("CONFIG_A=y\n", "6.1.192-3", "1.42")
    assert h != build.config_hash("CONFIG_A=y\n", "6.1.192-2", "1.43")


# --- lab records -------------------------------------------------------------------------


def info(**kw: object) -> vm.LabInfo:
    base: dict[str, object] = dict(
        name="t1", pid=os.getpid(), transport="gdbstub", kernel_kind="debian",
        release="6.1.0-56-amd64", image="/x", vmlinux=None, exec_port=1, gdb_port=2,
        kgdboc_port=None, netns=None, guest_ip=None, state_dir="/s", console_log="/s/c",
        console_socket="/s/s", interactive_log="/s/i", argv=["virtme-run"], started_at=1.0,
        cmdline="console=ttyS0 nokaslr",
    )
    base.update(kw)
    return vm.LabInfo(**base)  # type: ignore[arg-type]


def test_labinfo_endpoints_and_json() -> None:
    i = info()
    assert i.gdb_endpoint == "tcp:127.0.0.1:2" and i.gdb_prefix == [] and i.nokaslr
    assert vm.LabInfo.from_json(json.loads(json.dumps(i.to_json()))) == i
    oe = info(transport="kgdboe", netns="kdbg-t1", guest_ip="10.213.0.2", gdb_port=None)
    assert oe.gdb_endpoint == "udp:10.213.0.2:31337"
    assert oe.gdb_prefix == ["ip", "netns", "exec", "kdbg-t1"]
    assert info(transport="kgdboc", kgdboc_port=9).gdb_endpoint == "tcp:127.0.0.1:9"
    assert not info(cmdline="console=ttyS0").nokaslr


def test_only_a_qemu_of_that_lab_counts_as_alive() -> None:
    assert not vm.pid_is_lab(os.getpid(), "t1")  # pytest is not a QEMU
    assert not vm.pid_is_lab(0, "t1")
    assert not vm.pid_is_lab(2**22 + 1, "t1")


@pytest.fixture
def rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path / "run" / "kdbg" / "labs"


def test_a_lab_whose_qemu_is_gone_is_dead_and_down_cleans_it(rundir: Path) -> None:
    state = rundir / "t1"
    state.mkdir(parents=True)
    rec = info(pid=2**22 + 1, launcher_pid=None, state_dir=str(state),
               console_log=str(state / "console.log"))
    (state / "lab.json").write_text(json.dumps(rec.to_json()))
    (state / "console.log").write_text("boot\n[ 3.1] Kernel panic - not syncing\n")
    (got,) = vm.status()
    assert got.name == "t1" and not got.alive
    with pytest.raises(LabLost, match="dead"):
        vm.require("t1")
    vm.down("t1")
    assert not state.exists()
    with pytest.raises(BadInput, match="no lab named"):
        vm.get("t1")


# --- exec protocol, against the real agent binary on loopback ---------------------------------


@pytest.fixture(scope="module")
def agent_port() -> Iterator[int]:
    """The real guest agent, built from vm/kdbg-agent.c, serving on a loopback port
    with the guest setup skipped (no VM): the real wire protocol, the real process
    handling."""
    binary = agent.ensure_built()
    proc = subprocess.Popen([str(binary), "--serve-only", "--bind", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "ready on 127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        else:
            pytest.fail(f"the agent exited with {proc.wait()} before listening")
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def collect(port: int, argv: list[str], **kw: object) -> tuple[int, bytes, bytes]:
    out: list[bytes] = []
    err: list[bytes] = []
    status = run_streaming(port, argv, stdout=out.append, stderr=err.append, **kw)  # type: ignore[arg-type]
    return status, b"".join(out), b"".join(err)


def test_exec_separates_streams_and_returns_status(agent_port: int) -> None:
    status, out, err = collect(agent_port, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (status, out, err) == (7, b"out\n", b"err\n")


def test_exec_missing_command_is_127(agent_port: int) -> None:
    status, out, err = collect(agent_port, ["/nonexistent/cmd"])
    assert status == 127 and b"No such file" in err


def test_exec_stdin_bytes_and_big_output(agent_port: int) -> None:
    status, out, _ = collect(agent_port, ["tr", "a-z", "A-Z"], stdin=b"hello\n" * 50000)
    assert status == 0 and out == b"HELLO\n" * 50000


def test_exec_unread_stdin_does_not_lose_the_status(agent_port: int) -> None:
    status, out, _ = collect(agent_port, ["sh", "-c", "echo done"], stdin=b"x" * 200000)
    assert (status, out) == (0, b"done\n")


def test_exec_streams_as_output_comes(agent_port: int) -> None:
    seen: list[float] = []
    script = "for i in 1 2 3; do echo $i; sleep 0.4; done"
    with ExecSession(agent_port, ["sh", "-c", script]) as s:
        for _ in s:
            seen.append(time.monotonic())
    assert s.status == 0 and len(seen) == 3
    assert seen[2] - seen[0] > 0.6  # not buffered until exit


def test_exec_signal_reaches_the_command(agent_port: int) -> None:
    with ExecSession(agent_port, ["sh", "-c", "echo up; exec sleep 30"]) as s:
        chunks = iter(s)
        assert next(chunks).data == b"up\n"
        s.signal(signal.SIGINT)
        assert list(chunks) == []
    assert s.status == 128 + signal.SIGINT


def test_dropping_the_connection_kills_the_command(agent_port: int, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    s = ExecSession(agent_port, ["sh", "-c", f"echo $$ > {pidfile}; echo up; exec sleep 60"])
    assert next(iter(s)).data == b"up\n"
    pid = int(pidfile.read_text())
    s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()


def test_exec_env_and_cwd(agent_port: int) -> None:
    status, out, _ = collect(agent_port, ["sh", "-c", 'echo "$FOO $PATH"; pwd'],
                             env={"FOO": "bar", "PATH": "/bin:/usr/bin"}, cwd="/tmp")
    assert (status, out) == (0, b"bar /bin:/usr/bin\n/tmp\n")
    status, _, err = collect(agent_port, ["pwd"], cwd="/no/such/dir")
    assert status == 127 and b"kdbg-agent: pwd: No such file or directory" in err


def test_exec_stdin_streamed_then_closed(agent_port: int) -> None:
    with ExecSession(agent_port, ["cat"], stdin=True) as s:
        s.send_stdin(b"one\n")
        chunks = iter(s)
        assert next(chunks).data == b"one\n"  # cat answered before stdin ended
        s.send_stdin(b"two\n")
        s.close_stdin()
        assert b"".join(c.data for c in chunks) == b"two\n"
    assert s.status == 0


def test_exec_background_child_does_not_hold_the_status(agent_port: int) -> None:
    """A command that leaves a child holding its stdout: the status comes after a short
    drain, not when the child ends."""
    started = time.monotonic()
    status, out, _ = collect(agent_port, ["sh", "-c", "sleep 30 & echo bg"])
    assert (status, out) == (0, b"bg\n") and time.monotonic() - started < 10


def test_ping_reports_guest_facts(agent_port: int) -> None:
    from kdbg.lab.channel import ping

    facts = ping(agent_port)
    assert facts["release"] == os.uname().release and "boot_id" in facts


def test_unreachable_exec_port_is_lablost() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LabLost):
        ExecSession(port, ["true"])


# --- CLI ---------------------------------------------------------------------------------


def cli(*args: str, input: bytes | None = None) -> object:
    from kdbg.cli import main

    return CliRunner().invoke(main, ["lab", *args], input=input)


@pytest.mark.parametrize(
    "sub", ["", "up", "down", "status", "exec", "console", "build-kernel", "kgdboe-load", "vmlinux"]
)
def test_help(sub: str) -> None:
    r = cli(*([sub] if sub else []), "--help")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert "Examples:" in r.output  # type: ignore[attr-defined]


def test_up_dry_run_prints_the_command_and_starts_nothing(rundir: Path) -> None:
    if not list(Path("/usr/src").glob("linux-headers-*-amd64")):
        pytest.skip("no Debian kernel headers (scripts/setup.sh installs them)")
    r = cli("up", "--dry-run", "--name", "dry")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    argv = shlex.split(r.output)  # type: ignore[attr-defined]
    assert argv[0].endswith("virtme-run") and "kdbg-dry" in argv
    assert not (rundir / "dry").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["up", "--name", "Bad Name"], "bad lab name"),
        (["up", "--memory", "12X"], "bad memory size"),
        (["up", "--cpus", "0"], "bad CPU count"),
        (["down", "nosuch"], "no lab named 'nosuch'"),
        (["exec", "nosuch", "--", "true"], "no lab named 'nosuch'"),
        (["kgdboe-load", "nosuch", "--module", "/x.ko"], "no lab named 'nosuch'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    rundir: Path, args: list[str], message: str
) -> None:
    r = cli(*args)
    assert r.exit_code == 2, r.output  # type: ignore[attr-defined]
    lines = r.output.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("kdbg: error:")
    assert not rundir.exists() or not any(p.is_dir() for p in rundir.iterdir())


def test_exec_needs_a_command_after_dashdash() -> None:
    r = cli("exec", "uname")
    assert r.exit_code == 2 and "after '--'" in r.output  # type: ignore[attr-defined]


def test_exec_names_the_lab_before_dashdash(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []

    def fake(name: str, argv: list[str], **kw: object) -> int:
        calls.append((name, argv))
        return 3

    monkeypatch.setattr("kdbg.lab.exec_", fake)
    assert cli("exec", "--", "uname", "-r").exit_code == 3  # type: ignore[attr-defined]
    assert cli("exec", "second", "--", "ls", "--", "-x").exit_code == 3  # type: ignore[attr-defined]
    assert cli("exec", "--name", "third", "--", "true").exit_code == 3  # type: ignore[attr-defined]
    assert calls == [("default", ["uname", "-r"]), ("second", ["ls", "--", "-x"]),
                     ("third", ["true"])]


def test_agent_builds_once_per_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent compiles warning-free (-Wall -Wextra -Werror) into the cache, is static
    (the guest loads one file over 9p) and is reused until its source changes."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = agent.ensure_built()
    assert first.parent == tmp_path / "kdbg" / "agent" and os.access(first, os.X_OK)
    assert b"Dynamic section" not in subprocess.run(
        ["readelf", "-d", str(first)], capture_output=True, check=True).stdout
    mtime = first.stat().st_mtime_ns
    assert agent.ensure_built() == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left


def test_agent_build_failure_is_one_clear_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undeclared; }\n")
    monkeypatch.setattr(agent, "SOURCE", bad)
    with pytest.raises(LabError, match="building the guest agent failed: .*undeclared"):
        agent.ensure_built()
    assert list((tmp_path / "kdbg" / "agent").iterdir()) == []
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(LabError, match="no C compiler"):
        agent.ensure_built()


def test_agent_rejects_bad_arguments() -> None:
    proc = subprocess.run([str(agent.ensure_built()), "--bogus", "x"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
