"""A lab's life: check what ``kdbg lab up`` asks for, plan and start QEMU (through
virtme-run, detached), wait until the guest agent answers, and stop it again.

What is recorded of a lab, and where, is :mod:`kdbg.lab.registry`'s; which kernel it
boots is :mod:`kdbg.lab.kinds`'s; its command line is :mod:`kdbg.lab.command`'s. Only
a lab's recorded PIDs, checked with :func:`~kdbg.lab.registry.pid_is_lab`, are ever
signalled.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbg.errors import BadInput, LabError, LabTimeout
from kdbg.lab import agent, channel, kinds, netns, protocol
from kdbg.lab.accel import ACCELS
from kdbg.lab.accel import choose as choose_accel
from kdbg.lab.command import LaunchPlan, launch_argv
from kdbg.lab.kernel import Kernel, Progress, image_version_string, quiet
from kdbg.lab.registry import (
    EXEC_KEY,
    LabConfig,
    LabInfo,
    free_port,
    get,
    labs_dir,
    labs_lock,
    pid_is_lab,
    private_dir,
    validate_name,
    write_state,
)
from kdbg.lab.source import KernelSource
from kdbg.lab.wiring import sockets_recorded, wiring
from kdbg.transports import NAMES, needs_kgdb

MEMORY_RE = re.compile(r"[1-9][0-9]*[MG]")
CONSOLE_TAIL = 25
SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the NUL


# --- boot ----------------------------------------------------------------------------------


def _tool(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    raise LabError(f"{name} not found next to {sys.executable}", hint="pip install virtme-ng")


def _launch_env() -> dict[str, str]:
    """virtme-run runs helpers of its own (virtme-prep-kdir-mods): put its bin dir first."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return dict(os.environ, PATH=f"{bindir}:{path}")


def validate(config: LabConfig) -> None:
    """Reject bad input before anything is started or written."""
    validate_name(config.name)
    if config.transport not in NAMES:
        raise BadInput(f"unknown transport {config.transport!r}: one of {', '.join(NAMES)}")
    if not MEMORY_RE.fullmatch(config.memory):
        raise BadInput(f"bad memory size {config.memory!r}: like 1G or 768M")
    if not 1 <= config.cpus <= 16:
        raise BadInput(f"bad CPU count {config.cpus}: 1 to 16")
    if config.boot_timeout <= 0:
        raise BadInput("the boot timeout must be positive")
    if config.accel not in ACCELS:
        raise BadInput(f"unknown accelerator {config.accel!r}: one of {', '.join(ACCELS)}")


def check_kernel(config: LabConfig, kernel: Kernel) -> None:
    """Refuse a kgdb transport on a kernel whose config says it has no kgdb."""
    if not needs_kgdb(config.transport) or not config.require_kgdb:
        return
    try:
        kgdb = kernel.option("KGDB")
    except LabError:
        return  # config unknown: let the boot show it
    if kgdb != "y":
        raise BadInput(
            f"kernel {kernel.release} has no CONFIG_KGDB, so {config.transport} cannot work",
            hint="kdbg lab build-kernel, then kdbg lab up --kernel built",
        )


def plan_for(
    config: LabConfig, kernel: Kernel, state: Path, tap_fd: int | None = None,
    agent_path: Path | None = None, accel: str = "tcg",
) -> LaunchPlan:
    """The launch plan for ``config``: picks the exec port, names the lab's files."""
    wired = wiring(config.transport)
    sockets = {"console": state / "console.sock",
               "transport": state / wired.socket if wired.socket else None}
    for path in filter(None, sockets.values()):
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            raise BadInput(f"the lab's socket path {path} is too long for a Unix socket",
                           hint="set a shorter XDG_CACHE_HOME")
    return LaunchPlan(
        name=config.name,
        transport=config.transport,
        memory=config.memory,
        cpus=config.cpus,
        exec_port=free_port(),
        exec_key=state / EXEC_KEY,
        console_socket=state / "console.sock",
        console_log=state / "interactive.log",
        pidfile=state / "qemu.pid",
        agent=str(agent_path or agent.binary_path()),
        virtme_run=_tool("virtme-run"),
        socket=sockets["transport"],
        tap_fd=tap_fd,
        oe_cidr=netns.GUEST_CIDR if wired.own_netns else None,
        append=config.append,
        accel=accel,
    )


def dry_run(config: LabConfig) -> str:
    """The command ``up(config)`` would run, as one shell line; starts and fetches nothing.

    The kernel is as its kind plans it: a Debian kernel's path is the cache's even when
    not fetched yet.
    """
    validate(config)
    kernel = kinds.kind_for(config.kernel).planned(config.kernel)
    check_kernel(config, kernel)
    state = labs_dir() / config.name
    chosen = choose_accel(config.accel, kernel.image if kernel.image.exists() else None)
    own_netns = wiring(config.transport).own_netns
    plan = plan_for(config, kernel, state, tap_fd=3 if own_netns else None, accel=chosen.accel)
    argv = launch_argv(plan, kernel)
    if own_netns:
        ns = netns.netns_name(config.name)
        return f"# fd 3: tap {netns.TAP} in netns {ns}\n{shlex.join(argv)} 3<>/dev/net/tun"
    return shlex.join(argv)


def console_tail(path: Path, lines: int = CONSOLE_TAIL) -> str:
    """The console log's last ``lines`` lines, indented, for a message about a boot."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    tail = [ln.rstrip("\r") for ln in text.splitlines()[-lines:]]
    return "\n".join("    " + ln for ln in tail)


def up(config: LabConfig, progress: Progress = quiet) -> LabInfo:
    """Boot a lab detached and wait until its guest agent answers; returns its LabInfo.

    Raises BadInput (nothing started) for bad config, a name in use or a kernel that
    cannot do the transport; LabError/LabTimeout (QEMU stopped, state removed, the
    console's tail in the message) when the guest does not come up.
    """
    validate(config)
    _refuse_running(config.name)  # before any progress line: bad input is one line
    kind = kinds.kind_for(config.kernel)
    kernel = kind.resolve(config.kernel, progress)
    check_kernel(config, kernel)
    chosen = choose_accel(config.accel, kernel.image)
    progress(chosen.why)
    agent_path = agent.ensure_built()
    background = _background_work(config, kind, kernel, progress)
    with labs_lock():
        state = labs_dir() / config.name
        if (state / "lab.json").exists():
            _refuse_running(config.name)
            _cleanup(get(config.name))
        private_dir(state)
        launch = _launch(config, kernel, state, agent_path, chosen.accel, progress)
        info, proc = launch.info, launch.proc
        try:
            info = info.replace(pid=_wait_pidfile(info, launch.pidfile, proc))
        except BaseException:
            _stop(info, proc)
            _cleanup(info)
            raise
        write_state(info)

    for work in background:
        work.thread.start()
    try:
        facts = _wait_ready(info, proc, config.boot_timeout, progress)
    except BaseException:
        _stop(info, proc)
        _cleanup(info)
        raise
    for work in background:
        work.thread.join()
        if isinstance(work.result, Path):
            info = info.replace(vmlinux=str(work.result))
        elif isinstance(work.result, KernelSource) and work.result.note:
            progress(f"source: {work.result.note}")
        elif work.error is not None:
            progress(f"warning: {work.what}: {work.error}")
    info = info.replace(ready_at=time.time(), boot_id=facts.get("boot_id"),
                        cmdline=facts.get("cmdline"), extra={"guest": facts})
    write_state(info)
    return info


@dataclass
class _Launch:
    """QEMU just started: its launcher process, the pidfile it will write, the state."""

    info: LabInfo
    proc: subprocess.Popen[bytes]
    pidfile: Path


def _launch(config: LabConfig, kernel: Kernel, state: Path, agent_path: Path, accel: str,
            progress: Progress) -> _Launch:
    """Start QEMU for ``config`` (with the KGDBoE lab's netns and tap, if any) under
    the lab lock; on failure nothing of it is left."""
    ns = None
    tap_fd = None
    try:
        if wiring(config.transport).own_netns:
            ns = netns.create(config.name)
            tap_fd = netns.open_tap(ns)
        plan = plan_for(config, kernel, state, tap_fd, agent_path, accel)
        argv = launch_argv(plan, kernel)
        boot_log = state / "console.log"
        for stale in (boot_log, plan.console_log, plan.console_socket, plan.pidfile,
                      plan.socket):
            if stale is not None:
                stale.unlink(missing_ok=True)
        protocol.write_key_file(plan.exec_key)
        progress(f"booting lab {config.name!r}: {kernel.release} ({kernel.kind}), "
                 f"{config.transport}, {config.cpus} CPU, {config.memory}, "
                 f"{accel.upper()}")
        started = time.time()
        with open(boot_log, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(tap_fd,) if tap_fd is not None else (),
                cwd="/",
                env=_launch_env(),
            )
    except BaseException:
        if tap_fd is not None:
            os.close(tap_fd)
        if ns:
            netns.delete(ns)
        raise
    if tap_fd is not None:
        os.close(tap_fd)
    info = LabInfo(
        name=config.name,
        pid=0,
        transport=config.transport,
        kernel_kind=kernel.kind,
        release=kernel.release,
        image=str(kernel.image),
        vmlinux=str(kernel.vmlinux) if kernel.vmlinux else None,
        exec_port=plan.exec_port,
        **sockets_recorded(config.transport, plan.socket),
        netns=ns,
        guest_ip=netns.GUEST_IP if ns else None,
        state_dir=str(state),
        console_log=str(boot_log),
        console_socket=str(plan.console_socket),
        interactive_log=str(plan.console_log),
        argv=argv,
        started_at=started,
        launcher_pid=proc.pid,
        accel=accel,
    )
    return _Launch(info, proc, plan.pidfile)


def _refuse_running(name: str) -> None:
    """BadInput when lab ``name`` is recorded and its QEMU alive."""
    if (labs_dir() / name / "lab.json").exists():
        old = get(name)
        if old.alive:
            raise BadInput(f"lab {name!r} is already running (PID {old.pid})",
                           hint=f"kdbg lab down {name}, or --name OTHER")


def _wait_pidfile(info: LabInfo, pidfile: Path, proc: subprocess.Popen[bytes],
                  timeout: float = 120.0) -> int:
    """QEMU's PID, once QEMU has written it (virtme-run first builds the initramfs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pass
        code = proc.poll()
        if code is not None:
            raise LabError(f"lab {info.name!r}: virtme-run exited with status {code} before "
                           f"QEMU started:\n{console_tail(Path(info.console_log))}")
        time.sleep(0.05)
    raise LabTimeout(f"lab {info.name!r}: QEMU did not start within {timeout:.0f}s")


class _Background:
    """Work done while the lab boots (fetching the debug vmlinux, the kernel's source):
    its result, or the error a warning line shows when the lab is up."""

    def __init__(self, what: str, work: Callable[[], object]) -> None:
        self.what = what
        self.result: object = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)

    def _run(self, work: Callable[[], object]) -> None:
        try:
            self.result = work()
        except Exception as err:  # noqa: BLE001 - reported as a warning by up()
            self.error = err


def _background_work(config: LabConfig, kind: kinds.KernelKind, kernel: Kernel,
                     progress: Progress) -> list[_Background]:
    """What ``up`` fetches while the lab boots: the debug vmlinux (kinds that fetch it,
    unless ``--no-vmlinux``) and the kernel's source with Linux's gdb scripts (unless
    ``--no-source``; from the bzImage's version string, as the guest is not up yet)."""
    work = []
    if kind.fetches_vmlinux and kernel.vmlinux is None and config.fetch_vmlinux:
        work.append(_Background("no debug vmlinux",
                                lambda: kind.debug_vmlinux(kernel.release, progress)))
    if config.fetch_source:
        running = image_version_string(kernel.image)
        work.append(_Background("no kernel source",
                                lambda: kind.source(kernel, running, progress=progress)))
    return work


def _wait_ready(info: LabInfo, proc: subprocess.Popen[bytes], timeout: float,
                progress: Progress) -> dict[str, Any]:
    """Ping the agent once its "ready" line is on the console; before that, only a short
    ping now and then, in case the console says nothing. A ping that waits while the
    guest's address is not up yet costs time: QEMU's user network retransmits its SYN
    on second-long timers, so such a ping answers late even once the agent listens."""
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 15
    next_blind = time.monotonic() + 20
    log = Path(info.console_log)
    watcher = _ConsoleWatch(log, READY_MARK)
    access = info.exec_access()
    shown = ""
    while True:
        code = proc.poll()
        if code is not None:
            raise LabError(
                f"lab {info.name!r}: QEMU exited with status {code} while booting; "
                f"console (last lines):\n{console_tail(log)}"
            )
        now = time.monotonic()
        ready = watcher.seen()
        if ready or now > next_blind:
            next_blind = now + 5
            try:
                return channel.ping(access, timeout=2.0 if ready else 0.5)
            except (OSError, LabError):
                pass
        now = time.monotonic()
        if now > deadline:
            raise LabTimeout(
                f"lab {info.name!r} not ready after {timeout:.0f}s; console (last lines):\n"
                f"{console_tail(log)}"
            )
        if now > next_note:
            next_note = now + 15
            last = console_tail(log, 1).strip()
            note = f": {last[:80]}" if last != shown else ""
            shown = last
            progress(f"  waiting for the guest agent ({time.time() - info.started_at:.0f}s){note}")
        time.sleep(0.05)


READY_MARK = b"kdbg-agent: ready on "


class _ConsoleWatch:
    """Has ``mark`` appeared in the growing console log? Reads only what is new."""

    def __init__(self, path: Path, mark: bytes) -> None:
        self.path, self.mark = path, mark
        self.offset = 0
        self.tail = b""
        self.found = False

    def seen(self) -> bool:
        if self.found:
            return True
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return False
        self.offset += len(data)
        window = self.tail + data
        self.found = self.mark in window
        self.tail = window[-len(self.mark):]
        return self.found


# --- stop ----------------------------------------------------------------------------------


def _stop(info: LabInfo, proc: subprocess.Popen[bytes] | None = None, grace: float = 10.0) -> None:
    """Stop the lab's QEMU and its virtme-run parent: only their recorded PIDs, checked first.

    SIGTERM, then SIGKILL after ``grace`` seconds; returns when both are gone.
    """
    targets: list[tuple[int, bytes]] = [(info.pid, b"qemu-system")]
    if info.launcher_pid:
        targets.append((info.launcher_pid, b"virtme-run"))

    def alive(pid: int, program: bytes) -> bool:
        if proc is not None and pid == proc.pid:
            return proc.poll() is None
        with suppress(ChildProcessError):  # our own child (up() and down() in one process)
            os.waitpid(pid, os.WNOHANG)
        return pid_is_lab(pid, info.name, program)

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid, program in targets:
            if alive(pid, program):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not any(alive(pid, prog) for pid, prog in targets):
                _wait_reaped([pid for pid, _ in targets])
                return
            time.sleep(0.05)
    raise LabError(f"lab {info.name!r}: QEMU PID {info.pid} survived SIGKILL")


def _wait_reaped(pids: list[int], timeout: float = 5.0) -> None:
    """Give init a moment to reap exited processes, so none is left even as a zombie."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(Path(f"/proc/{p}").exists() for p in pids):
        for pid in pids:
            with suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def _cleanup(info: LabInfo) -> None:
    if info.netns:
        netns.delete(info.netns)
    state = Path(info.state_dir)
    for path in state.glob("*"):
        if path.is_file() or path.is_socket():
            path.unlink(missing_ok=True)
    with suppress(OSError):
        state.rmdir()


def down(name: str = "default") -> LabInfo:
    """Stop lab ``name`` and remove its state and namespace. Raises BadInput if unknown."""
    with labs_lock():
        info = get(name)
        _stop(info)
        _cleanup(info)
    return info.replace(alive=False)
