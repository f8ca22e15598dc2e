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
from kdbg.lab import agent, build, command, kernel, lifecycle, protocol, registry
from kdbg.lab.channel import ExecAccess, ExecSession, run_streaming
from kdbg.lab.command import LaunchPlan, launch_argv
from kdbg.lab.kernel import Kernel
from kdbg.transports import NAMES

DEBIAN = Kernel("debian", "6.1.0-56-amd64", Path("/cache/root/boot/vmlinuz-6.1.0-56-amd64"))


def plan(transport: str = "gdbstub", **kw: object) -> LaunchPlan:
    base: dict[str, object] = dict(
        name="t1",
        transport=transport,
        memory="1G",
        cpus=2,
        exec_port=40001,
        exec_key=Path("/run/l/exec.key"),
        console_socket=Path("/run/l/console.sock"),
        console_log=Path("/run/l/interactive.log"),
        pidfile=Path("/run/l/qemu.pid"),
        agent="/cache/kdbg/agent/kdbg-agent-0123456789ab",
        virtme_run="/venv/bin/virtme-run",
        socket={"gdbstub": Path("/run/l/gdb.sock"),
                "kgdboc": Path("/run/l/kgdboc.sock")}.get(transport),
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
    assert opt_after(q, "-gdb") == ["unix:/run/l/gdb.sock,server=on,wait=off"]
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
                                command.EXEC_MAC, "--shell-tty", "/dev/ttyS2",
                                "--key-file", "/run/l/exec.key"]


def test_no_command_line_ever_lifts_the_network_restriction() -> None:
    for transport in NAMES:
        joined = " ".join(launch_argv(plan(transport), DEBIAN))
        assert "restrict=off" not in joined and "restrict=no" not in joined
        assert "restrict=on" in joined
        for part in joined.split():
            if "hostfwd=" in part:
                assert "hostfwd=tcp:127.0.0.1:" in part  # only ever on the host's loopback
        # the stub, kgdboc and the console are never TCP ports: Unix sockets only
        q = launch_argv(plan(transport), DEBIAN)
        q = q[q.index("--qemu-opts") + 1 :]
        for flag in ("-gdb", "-serial", "-chardev"):
            for value in opt_after(q, flag):
                assert not value.startswith(("tcp:", "udp:", "telnet:")), value
                assert "host=" not in value and "port=" not in value, value


def test_kgdboc_command_line() -> None:
    argv = launch_argv(plan("kgdboc"), DEBIAN)
    assert opt_after(argv, "--kopt") == ["nokaslr", "kgdboc=ttyS1,115200"]
    q = argv[argv.index("--qemu-opts") + 1 :]
    assert opt_after(q, "-serial")[0] == "unix:/run/l/kgdboc.sock,server=on,wait=off"
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
        lifecycle.validate(registry.LabConfig(**change))  # type: ignore[arg-type]


def test_kgdb_transports_refuse_a_kernel_without_kgdb(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("# CONFIG_KGDB is not set\nCONFIG_BPF=y\n")
    k = Kernel("image", "6.1", tmp_path / "bzImage", config=cfg)
    with pytest.raises(BadInput, match="no CONFIG_KGDB"):
        lifecycle.check_kernel(registry.LabConfig(transport="kgdboc"), k)
    lifecycle.check_kernel(registry.LabConfig(transport="gdbstub"), k)
    lifecycle.check_kernel(registry.LabConfig(transport="kgdboe", require_kgdb=False), k)
    cfg.write_text("CONFIG_KGDB=y\n")
    lifecycle.check_kernel(registry.LabConfig(transport="kgdboc"), k)


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


def info(**kw: object) -> registry.LabInfo:
    base: dict[str, object] = dict(
        name="t1", pid=os.getpid(), transport="gdbstub", kernel_kind="debian",
        release="6.1.0-56-amd64", image="/x", vmlinux=None, exec_port=1,
        gdb_socket="/s/gdb.sock", kgdboc_socket=None, netns=None, guest_ip=None,
        state_dir="/s", console_log="/s/c",
        console_socket="/s/s", interactive_log="/s/i", argv=["virtme-run"], started_at=1.0,
        cmdline="console=ttyS0 nokaslr",
    )
    base.update(kw)
    return registry.LabInfo(**base)  # type: ignore[arg-type]


def test_labinfo_endpoints_and_json() -> None:
    i = info()
    assert i.gdb_endpoint == "unix:/s/gdb.sock" and i.gdb_target == "/s/gdb.sock"
    assert i.gdb_prefix == [] and i.nokaslr
    assert registry.LabInfo.from_json(json.loads(json.dumps(i.to_json()))) == i
    oe = info(transport="kgdboe", netns="kdbg-t1", guest_ip="10.213.0.2", gdb_socket=None)
    assert oe.gdb_endpoint == oe.gdb_target == "udp:10.213.0.2:31337"
    assert oe.gdb_prefix == ["ip", "netns", "exec", "kdbg-t1"]
    oc = info(transport="kgdboc", gdb_socket=None, kgdboc_socket="/s/kgdboc.sock")
    assert (oc.gdb_endpoint, oc.gdb_target) == ("serial:/s/kgdboc.sock", "/s/kgdboc.sock")
    assert not info(cmdline="console=ttyS0").nokaslr


def test_only_a_qemu_of_that_lab_counts_as_alive() -> None:
    assert not registry.pid_is_lab(os.getpid(), "t1")  # pytest is not a QEMU
    assert not registry.pid_is_lab(0, "t1")
    assert not registry.pid_is_lab(2**22 + 1, "t1")


@pytest.fixture
def rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "kdbg" / "run" / "labs"


def test_a_lab_whose_qemu_is_gone_is_dead_and_down_cleans_it(rundir: Path) -> None:
    state = rundir / "t1"
    state.mkdir(parents=True)
    rec = info(pid=2**22 + 1, launcher_pid=None, state_dir=str(state),
               console_log=str(state / "console.log"))
    (state / "lab.json").write_text(json.dumps(rec.to_json()))
    (state / "console.log").write_text("boot\n[ 3.1] Kernel panic - not syncing\n")
    (got,) = registry.status()
    assert got.name == "t1" and not got.alive
    with pytest.raises(LabLost, match="dead"):
        registry.require("t1")
    lifecycle.down("t1")
    assert not state.exists()
    with pytest.raises(BadInput, match="no lab named"):
        registry.get("t1")


# --- exec protocol, against the real agent binary on loopback ---------------------------------


@pytest.fixture(scope="module")
def agent_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent") / "exec.key"
    protocol.write_key_file(path)
    return path


@pytest.fixture(scope="module")
def agent_access(agent_key_file: Path) -> Iterator[ExecAccess]:
    """The real guest agent, built from vm/kdbg-agent.c, serving on a loopback port
    with the guest setup skipped (no VM): the real wire protocol, the real process
    handling, the real key check."""
    binary = agent.ensure_built()
    proc = subprocess.Popen([str(binary), "--serve-only", "--bind", "127.0.0.1", "--port", "0",
                             "--key-file", str(agent_key_file)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "ready on 127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        else:
            pytest.fail(f"the agent exited with {proc.wait()} before listening")
        yield ExecAccess(port, protocol.read_key_file(agent_key_file))
    finally:
        proc.terminate()
        proc.wait(5)


def collect(access: ExecAccess, argv: list[str], **kw: object) -> tuple[int, bytes, bytes]:
    out: list[bytes] = []
    err: list[bytes] = []
    status = run_streaming(access, argv, stdout=out.append, stderr=err.append, **kw)  # type: ignore[arg-type]
    return status, b"".join(out), b"".join(err)


def test_exec_separates_streams_and_returns_status(agent_access: ExecAccess) -> None:
    status, out, err = collect(agent_access, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (status, out, err) == (7, b"out\n", b"err\n")


def test_exec_missing_command_is_127(agent_access: ExecAccess) -> None:
    status, out, err = collect(agent_access, ["/nonexistent/cmd"])
    assert status == 127 and b"No such file" in err


def test_exec_stdin_bytes_and_big_output(agent_access: ExecAccess) -> None:
    status, out, _ = collect(agent_access, ["tr", "a-z", "A-Z"], stdin=b"hello\n" * 50000)
    assert status == 0 and out == b"HELLO\n" * 50000


def test_exec_unread_stdin_does_not_lose_the_status(agent_access: ExecAccess) -> None:
    status, out, _ = collect(agent_access, ["sh", "-c", "echo done"], stdin=b"x" * 200000)
    assert (status, out) == (0, b"done\n")


def test_exec_streams_as_output_comes(agent_access: ExecAccess) -> None:
    seen: list[float] = []
    script = "for i in 1 2 3; do echo $i; sleep 0.4; done"
    with ExecSession(agent_access, ["sh", "-c", script]) as s:
        for _ in s:
            seen.append(time.monotonic())
    assert s.status == 0 and len(seen) == 3
    assert seen[2] - seen[0] > 0.6  # not buffered until exit


def test_exec_signal_reaches_the_command(agent_access: ExecAccess) -> None:
    with ExecSession(agent_access, ["sh", "-c", "echo up; exec sleep 30"]) as s:
        chunks = iter(s)
        assert next(chunks).data == b"up\n"
        s.signal(signal.SIGINT)
        assert list(chunks) == []
    assert s.status == 128 + signal.SIGINT


def test_dropping_the_connection_kills_the_command(agent_access: ExecAccess,
                                                    tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    s = ExecSession(agent_access, ["sh", "-c", f"echo $$ > {pidfile}; echo up; exec sleep 60"])
    assert next(iter(s)).data == b"up\n"
    pid = int(pidfile.read_text())
    s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()


def test_exec_env_and_cwd(agent_access: ExecAccess) -> None:
    status, out, _ = collect(agent_access, ["sh", "-c", 'echo "$FOO $PATH"; pwd'],
                             env={"FOO": "bar", "PATH": "/bin:/usr/bin"}, cwd="/tmp")
    assert (status, out) == (0, b"bar /bin:/usr/bin\n/tmp\n")
    status, _, err = collect(agent_access, ["pwd"], cwd="/no/such/dir")
    assert status == 127 and b"kdbg-agent: pwd: No such file or directory" in err


def test_exec_stdin_streamed_then_closed(agent_access: ExecAccess) -> None:
    with ExecSession(agent_access, ["cat"], stdin=True) as s:
        s.send_stdin(b"one\n")
        chunks = iter(s)
        assert next(chunks).data == b"one\n"  # cat answered before stdin ended
        s.send_stdin(b"two\n")
        s.close_stdin()
        assert b"".join(c.data for c in chunks) == b"two\n"
    assert s.status == 0


def test_exec_background_child_does_not_hold_the_status(agent_access: ExecAccess) -> None:
    """A command that leaves a child holding its stdout: the status comes after a short
    drain, not when the child ends."""
    started = time.monotonic()
    status, out, _ = collect(agent_access, ["sh", "-c", "sleep 30 & echo bg"])
    assert (status, out) == (0, b"bg\n") and time.monotonic() - started < 10


def test_ping_reports_guest_facts(agent_access: ExecAccess) -> None:
    from kdbg.lab.channel import ping

    facts = ping(agent_access)
    assert facts["release"] == os.uname().release and "boot_id" in facts


def test_unreachable_exec_port_is_lablost() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LabLost):
        ExecSession(ExecAccess(port, b"0" * 64), ["true"])


# --- exec key ------------------------------------------------------------------------------


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


def refused(port: int, data: bytes) -> bool:
    """Send ``data`` on a fresh connection; True when the agent closed it unanswered."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        try:
            s.sendall(data)
            return s.recv(4096) == b""
        except ConnectionResetError:
            return True


@pytest.mark.parametrize("label", ["no key (a run frame replayed alone)", "ping without key",
                                   "wrong key", "short key", "long key", "uppercase key",
                                   "huge first frame", "nothing"])
def test_agent_runs_nothing_without_the_key(agent_access: ExecAccess, tmp_path: Path,
                                             label: str) -> None:
    """Whatever a client sends first, only the lab's key opens the channel: the command
    (which would create a marker file) never runs and nothing is answered."""
    marker = tmp_path / "ran"
    run = frame(protocol.RUN, protocol.encode_run(["touch", str(marker)], {}, "/", False))
    key = agent_access.key
    wrong = bytes([key[0] ^ 1]) + key[1:] if key[0:1] != b"0" else b"1" + key[1:]
    first = {
        "no key (a run frame replayed alone)": run,
        "ping without key": frame(protocol.PING),
        "wrong key": frame(protocol.AUTH, wrong) + run,
        "short key": frame(protocol.AUTH, key[:32]) + run,
        "long key": frame(protocol.AUTH, key + b"0") + run,
        "uppercase key": frame(protocol.AUTH, key.upper()) + run if key != key.upper()
        else frame(protocol.AUTH, b"G" * 64) + run,
        "huge first frame": protocol.AUTH + (1 << 30).to_bytes(4, "big") + key,
        "nothing": b"",
    }[label]
    if label == "nothing":
        with socket.create_connection(("127.0.0.1", agent_access.port), timeout=15) as s:
            s.settimeout(15)
            started = time.monotonic()
            assert s.recv(1) == b""  # closed after the agent's auth deadline
            assert time.monotonic() - started < 12
    else:
        assert refused(agent_access.port, first)
    time.sleep(0.2)
    assert not marker.exists()
    # the right key still works afterwards
    status, _, _ = collect(agent_access, ["touch", str(marker)])
    assert status == 0 and marker.exists()


def test_agent_does_not_serve_without_a_usable_key(tmp_path: Path) -> None:
    binary = str(agent.ensure_built())
    base = [binary, "--serve-only", "--bind", "127.0.0.1", "--port", "0"]
    proc = subprocess.run(base, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2 and "--key-file is required" in proc.stderr
    for content in (None, "", "abc", "x" * 64, "A" * 64, "0" * 63):
        path = tmp_path / "exec.key"
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_text(content)
        proc = subprocess.run([*base, "--key-file", str(path)], capture_output=True, text=True,
                              timeout=10)
        assert proc.returncode == 1 and "not serving" in proc.stdout, content
        assert "ready on" not in proc.stdout
        if content:
            assert content not in proc.stdout + proc.stderr


def test_key_file_is_private_random_and_never_printed(rundir: Path) -> None:
    a, b = rundir.parent / "a.key", rundir.parent / "b.key"
    rundir.parent.mkdir(parents=True, exist_ok=True)
    protocol.write_key_file(a)
    protocol.write_key_file(b)
    assert a.stat().st_mode & 0o777 == 0o600
    ka, kb = protocol.read_key_file(a), protocol.read_key_file(b)
    assert len(ka) == 64 and int(ka, 16) >= 0 and ka != kb  # 256 random bits each
    protocol.write_key_file(a)  # a new boot gets a new key
    assert protocol.read_key_file(a) != ka
    rec = info(state_dir=str(rundir.parent))
    (rundir.parent / registry.EXEC_KEY).write_bytes(ka)
    access = rec.exec_access()
    assert access.key == ka and ka.decode() not in repr(access)
    assert ka.decode() not in json.dumps(rec.to_json())


def test_lab_state_is_private(rundir: Path) -> None:
    assert registry.labs_dir() == rundir
    assert rundir.stat().st_mode & 0o777 == 0o700
    rundir.chmod(0o755)
    registry.labs_dir()
    assert rundir.stat().st_mode & 0o777 == 0o700


def test_dry_run_shows_the_key_file_not_a_key(rundir: Path) -> None:
    if not list(Path("/usr/src").glob("linux-headers-*-amd64")):
        pytest.skip("no Debian kernel headers (scripts/setup.sh installs them)")
    line = lifecycle.dry_run(registry.LabConfig(name="dry"))
    argv = shlex.split(line)
    script = shlex.split(opt_after(argv, "--script-sh")[0].partition(" & exec ")[2])
    assert script[script.index("--key-file") + 1] == str(rundir / "dry" / "exec.key")
    assert not (rundir / "dry" / "exec.key").exists()
    q = argv[argv.index("--qemu-opts") + 1 :]
    assert opt_after(q, "-gdb") == [f"unix:{rundir / 'dry' / 'gdb.sock'},server=on,wait=off"]


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


@pytest.mark.parametrize("args", [["up"], ["status"], ["down"], ["exec", "--", "id"],
                                  ["console"], ["vmlinux"], ["build-kernel"],
                                  ["kgdboe-load", "--module", "/x.ko"], ["up", "--dry-run"]])
def test_lab_commands_need_root(monkeypatch: pytest.MonkeyPatch, rundir: Path,
                                args: list[str]) -> None:
    """A user who is not root gets one line and exit 1 from every lab command, before
    anything is read or written (no traceback from the cache directory)."""
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    r = cli(*args)
    assert r.exit_code == 1, r.output  # type: ignore[attr-defined]
    lines = r.output.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("kdbg: error: kdbg lab needs root"), lines
    assert not rundir.exists()
    assert cli(*args[:1], "--help").exit_code == 0  # type: ignore[attr-defined]


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


def test_module_list_key_ignores_refcounts_and_states() -> None:
    from kdbg.symbols.kallsyms import modules_key as _modules_key

    a = "nf_tables 311296 3 nft_compat, Live 0xffffffffc0370000\nx 1 0 - Live 0xffffffffc0001000\n"
    b = "x 1 5 - Live 0xffffffffc0001000\nnf_tables 311296 0 - Unloading 0xffffffffc0370000\n"
    assert _modules_key(a) == _modules_key(b)
    assert _modules_key(a) != _modules_key("x 1 0 - Live 0xffffffffc0001000\n")
    assert _modules_key(a) != _modules_key(a.replace("c0370000", "c0380000"))
