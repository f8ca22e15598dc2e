"""The lab's launch command line: a pure function of the lab's config and resources.

kdbg starts ``virtme-run`` (virtme-ng's runner, the one ``vng --run`` uses) directly:
it builds the initramfs that loads 9p and virtio modules, shares the host's root
read-only with tmpfs overlays, and then runs QEMU as its child and waits for it. QEMU
writes its PID to the lab's pidfile; that PID is the lab's. Everything kdbg adds goes
through ``--kopt`` and ``--qemu-opts``:

* serial ports: ttyS0 is virtme's boot console (to the lab's console log), ttyS1 is
  kgdboc's (a Unix socket in the lab's state directory, or ``null``), ttyS2 the
  interactive console (a Unix socket, logged) where the agent keeps a root shell;
* the exec NIC: virtio-net on user networking with ``restrict=on`` (the guest reaches
  nothing) and one ``hostfwd`` from ``127.0.0.1:<exec_port>`` to the agent, which
  serves only clients that send the lab's exec key (``--key-file``);
* ``-gdb unix:<state>/gdb.sock`` for the gdbstub transport.

Every socket sits in the lab's state directory (mode 0700): only the lab's owner can
reach the stub, the kgdboc line and the console. Only the exec channel is a TCP port,
because QEMU's user network forwards only TCP and UDP; the key guards it. For KGDBoE,
an e1000 on the tap fd of the lab's own network namespace: KGDBoE's UDP port has no
authentication, so only processes in that namespace (root's) can reach it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from kdbg.lab import protocol
from kdbg.lab.kernel import Kernel
from kdbg.lab.wiring import wiring

EXEC_MAC = "52:54:00:6b:64:01"
OE_MAC = "52:54:00:6b:64:02"
SHELL_TTY = "/dev/ttyS2"
# virtme-ng's own overlays (what `vng` asks for): writable in the guest, untouched on the host.
OVERLAYS = ("/etc", "/lib", "/home", "/opt", "/srv", "/usr", "/var", "/tmp", "/root")


@dataclass(frozen=True)
class LaunchPlan:
    """Everything the launch command depends on besides the kernel. ``socket`` is the
    transport's Unix socket (:mod:`kdbg.lab.wiring`), when QEMU serves it on one."""

    name: str
    transport: str
    memory: str
    cpus: int
    exec_port: int
    exec_key: Path
    console_socket: Path
    console_log: Path
    pidfile: Path
    agent: str
    virtme_run: str
    socket: Path | None = None
    tap_fd: int | None = None
    oe_cidr: str | None = None
    append: tuple[str, ...] = field(default_factory=tuple)
    accel: str = "tcg"  # "kvm" only when kdbg.lab.accel's probe saw a KVM guest run


def kernel_options(plan: LaunchPlan) -> list[str]:
    """Boot options kdbg adds: ``nokaslr`` whenever a gdb transport is on, and what the
    transport needs (kgdboc's serial port)."""
    return ["nokaslr", *wiring(plan.transport).kernel_options, *plan.append]


def agent_command(plan: LaunchPlan) -> str:
    """The guest's boot command: the agent binary, from the host's files."""
    argv = [plan.agent, "--exec-mac", EXEC_MAC, "--shell-tty", SHELL_TTY,
            "--key-file", str(plan.exec_key)]
    drivers = ["virtio_net"]
    if plan.oe_cidr:
        argv += ["--oe-mac", OE_MAC, "--oe-cidr", plan.oe_cidr]
        drivers.append("e1000")
    # The NIC drivers load in the background; the agent waits for the NICs to appear.
    loads = " ".join(f"modprobe -q {d} 2>/dev/null;" for d in drivers)
    stamp = "read up _ < /proc/uptime; echo \"[$up] kdbg: starting the agent\";"
    return f"{stamp} ( {loads} ) & exec {shlex.join(argv)}"


def qemu_options(plan: LaunchPlan) -> list[str]:
    """QEMU arguments kdbg adds after virtme-ng's own."""
    wired = wiring(plan.transport)
    opts: list[str] = ["-pidfile", str(plan.pidfile)]
    if wired.on_serial:
        assert plan.socket is not None
        opts += ["-serial", f"unix:{plan.socket},server=on,wait=off"]
    else:
        opts += ["-serial", "null"]
    opts += [
        "-chardev",
        f"socket,id=kdbgcon,path={plan.console_socket},server=on,wait=off,"
        f"logfile={plan.console_log},logappend=on",
        "-serial",
        "chardev:kdbgcon",
        "-netdev",
        f"user,id=kdbgexec,restrict=on,ipv6=off,"
        f"hostfwd=tcp:127.0.0.1:{plan.exec_port}-{protocol.GUEST_EXEC_IP}:{protocol.GUEST_PORT}",
        "-device",
        f"virtio-net-pci,netdev=kdbgexec,mac={EXEC_MAC}",
    ]
    if wired.qemu_gdb:
        assert plan.socket is not None
        opts += ["-gdb", f"unix:{plan.socket},server=on,wait=off"]
    if wired.own_netns:
        assert plan.tap_fd is not None
        opts += [
            "-netdev",
            f"tap,id=kdbgoe,fd={plan.tap_fd}",
            "-device",
            f"e1000,netdev=kdbgoe,mac={OE_MAC}",
        ]
    return opts


def launch_argv(plan: LaunchPlan, kernel: Kernel) -> list[str]:
    """The full ``virtme-run`` command line that boots the lab."""
    argv = [plan.virtme_run]
    if kernel.kdir is not None:
        argv += ["--kdir", str(kernel.kdir)]
    else:
        argv += ["--kimg", str(kernel.image)]
    argv += [
        "--mods",
        "auto",
        "--name",
        f"kdbg-{plan.name}",
        *(["--disable-kvm"] if plan.accel != "kvm" else []),
        "--force-9p",
        "--memory",
        plan.memory,
        "--cpus",
        str(plan.cpus),
        "--cwd",
        "/",
        "--disable-monitor",
        "--show-boot-console",
    ]
    for d in OVERLAYS:
        argv += ["--overlay-rwdir", d]
    for opt in kernel_options(plan):
        argv += ["--kopt", opt]
    argv += ["--script-sh", agent_command(plan)]
    argv += ["--qemu-opts", *qemu_options(plan)]
    return argv
