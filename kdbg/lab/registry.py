"""The labs kdbg knows: what a lab asks for (:class:`LabConfig`), what is recorded of it
(:class:`LabInfo`), where that record lives, and whether its QEMU is alive.

Each lab has a state directory ``LABS/NAME`` holding ``lab.json`` (its
:class:`LabInfo`), the exec key (``exec.key``, mode 0600), QEMU's gdb stub and kgdboc
sockets, the boot console log, the interactive console's socket and log, and a
per-boot kallsyms cache. ``LABS`` and every state directory are mode 0700, so no other
local user reaches a socket or reads a log or the key; labs are root's (see
docs/lab.md, "Who can reach a lab"). A lab is *alive* while the PID recorded there is a
QEMU whose command line names ``kdbg-NAME``; anything else is reported dead, and only
that PID (never a process found by name) is ever signalled. Booting and stopping a lab
is :mod:`kdbg.lab.lifecycle`'s.
"""

from __future__ import annotations

import json
import os
import re
import socket
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdbg.dirs import cache_dir
from kdbg.errors import BadInput, LabError, LabLost, NeedsRoot
from kdbg.lab import channel, protocol
from kdbg.lab.kernel import locked
from kdbg.lab.wiring import wiring

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,19}")
EXEC_KEY = "exec.key"


@dataclass(frozen=True)
class LabConfig:
    """What ``kdbg lab up`` asks for.

    ``kernel`` is a ``--kernel`` spec: one of the forms of :data:`kdbg.lab.kinds.KINDS`
    (``"debian"``, the default stock kernel; ``"debian:6.12"``; ``"built"``, the cached
    kgdb lab kernel; or a path to a kernel build directory or bzImage).
    ``require_kgdb=False`` lets kgdboc/kgdboe labs boot a kernel without CONFIG_KGDB
    (only useful to test their plumbing). ``fetch_vmlinux`` and ``fetch_source``: get the
    kernel's debug vmlinux, and its source with Linux's gdb scripts, into the cache while
    the lab boots (``--no-vmlinux``, ``--no-source`` skip them).
    """

    name: str = "default"
    kernel: str = "debian"
    transport: str = "gdbstub"
    memory: str = "1G"
    cpus: int = 2
    boot_timeout: float = 300.0
    fetch_vmlinux: bool = True
    fetch_source: bool = True
    require_kgdb: bool = True
    append: tuple[str, ...] = ()
    accel: str = "auto"  # "auto", "kvm" or "tcg": see kdbg.lab.accel


@dataclass(frozen=True)
class LabInfo:
    """A lab as recorded at boot, plus whether its QEMU is alive now.

    ``gdb_endpoint`` is kdbg's endpoint (:mod:`kdbg.debugger.endpoint`):
    ``unix:STATE/gdb.sock`` (QEMU's stub), ``serial:STATE/kgdboc.sock`` (kgdboc) or
    ``udp:IP:PORT`` (KGDBoE; gdb must run in ``netns``, see ``gdb_prefix``);
    ``gdb_target`` is what gdb's ``target remote`` takes.
    ``vmlinux`` is the kernel's ELF with DWARF when known (Debian's from the -dbg
    package, fetched at ``up``; see :func:`kdbg.lab.guest.vmlinux`).
    """

    name: str
    pid: int  # QEMU's
    transport: str
    kernel_kind: str
    release: str
    image: str
    vmlinux: str | None
    exec_port: int
    gdb_socket: str | None
    kgdboc_socket: str | None
    netns: str | None
    guest_ip: str | None
    state_dir: str
    console_log: str
    console_socket: str
    interactive_log: str
    argv: list[str]
    started_at: float
    launcher_pid: int | None = None  # virtme-run, QEMU's parent
    ready_at: float | None = None
    boot_id: str | None = None
    cmdline: str | None = None
    alive: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    accel: str = "tcg"  # what QEMU runs under: "kvm" or "tcg"

    @property
    def socket(self) -> str | None:
        """The Unix socket QEMU serves the lab's transport on, if it does."""
        record = wiring(self.transport).record
        return getattr(self, record) if record else None

    @property
    def gdb_endpoint(self) -> str:
        return wiring(self.transport).endpoint(self.socket, self.guest_ip)

    @property
    def gdb_target(self) -> str:
        """The argument of gdb's ``target remote`` (a socket's path, or ``udp:IP:PORT``)."""
        return self.socket or self.gdb_endpoint

    @property
    def exec_key_file(self) -> Path:
        return Path(self.state_dir) / EXEC_KEY

    def exec_access(self) -> channel.ExecAccess:
        """The exec channel's port and key. Raises LabError when the key is unreadable
        (a lab booted by an older kdbg has none)."""
        try:
            key = protocol.read_key_file(self.exec_key_file)
        except (OSError, ValueError) as err:
            raise LabError(f"lab {self.name!r} has no usable exec key ({err})",
                           hint=f"kdbg lab down {self.name}; kdbg lab up --name {self.name}"
                           ) from err
        return channel.ExecAccess(self.exec_port, key)

    @property
    def gdb_prefix(self) -> list[str]:
        """Command prefix gdb needs to reach the endpoint (the lab's netns for KGDBoE)."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    @property
    def nokaslr(self) -> bool:
        return "nokaslr" in (self.cmdline or "").split()

    @property
    def boot_seconds(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["gdb_endpoint"] = self.gdb_endpoint
        d["gdb_target"] = self.gdb_target
        d["nokaslr"] = self.nokaslr
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> LabInfo:
        """This record with ``changes`` made (a new one: records are frozen)."""
        d = asdict(self)
        d.update(changes)
        return LabInfo(**d)


def require_root() -> None:
    """Labs are root's: raise NeedsRoot for anyone else, before any state is touched."""
    if os.geteuid() != 0:
        raise NeedsRoot(
            "kdbg lab needs root: a lab is root's VM (QEMU, a network namespace, the host's "
            "whole file system mounted in the guest); run it as root, e.g. sudo kdbg lab ..."
        )


def private_dir(path: Path) -> Path:
    """``path``, created if needed and set to mode 0700 (owner only)."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)
    return path


def labs_dir() -> Path:
    """Where labs keep their state: under the cache (the guest reads its exec key from
    there over 9p; a ``/run`` directory is not what the guest sees), mode 0700."""
    require_root()
    return private_dir(cache_dir("run", "labs"))


def _state_file(name: str) -> Path:
    return labs_dir() / name / "lab.json"


def labs_lock() -> AbstractContextManager[None]:
    """The lock of all labs' records: a boot or a stop holds it while it writes."""
    return locked(labs_dir() / ".lock")


def write_state(info: LabInfo) -> None:
    """Record ``info`` as its lab's ``lab.json`` (replaced whole, never half written)."""
    path = _state_file(info.name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info.to_json(), indent=2) + "\n")
    tmp.rename(path)


def pid_is_lab(pid: int, name: str, program: bytes = b"qemu-system") -> bool:
    """True when ``pid`` is a live QEMU (or ``program``) started for lab ``name``.

    This guards against PID reuse: kdbg signals a recorded PID only when this holds.
    """
    if pid <= 0:
        return False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    args = raw.split(b"\0")
    return any(program in a for a in args[:2]) and f"kdbg-{name}".encode() in args


def validate_name(name: str) -> str:
    """``name`` when it is a lab name (1-20 of a-z, 0-9 and '-'); BadInput otherwise."""
    if not NAME_RE.fullmatch(name):
        raise BadInput(f"bad lab name {name!r}: use 1-20 of a-z, 0-9 and '-'")
    return name


def get(name: str = "default") -> LabInfo:
    """The recorded lab ``name`` with ``alive`` set from its QEMU. Raises BadInput if none."""
    validate_name(name)
    path = _state_file(name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"no lab named {name!r}", hint="kdbg lab up --name " + name) from None
    info = LabInfo.from_json(data)
    alive = pid_is_lab(info.pid, name)
    return info if alive == info.alive else info.replace(alive=alive)


def require(name: str = "default") -> LabInfo:
    """Like :func:`get`, but raises LabLost when the lab's QEMU is gone."""
    info = get(name)
    if not info.alive:
        raise LabLost(f"lab {name!r} is dead (its QEMU, PID {info.pid}, is gone)",
                      hint=f"see {info.console_log}; kdbg lab down {name}")
    return info


def status() -> list[LabInfo]:
    """Every recorded lab, alive or dead, by name."""
    out = []
    for path in sorted(labs_dir().glob("*/lab.json")):
        try:
            out.append(get(path.parent.name))
        except (BadInput, ValueError, json.JSONDecodeError):
            continue
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, not recorded by another lab."""
    taken = set()
    for path in labs_dir().glob("*/lab.json"):
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        taken.add(d.get("exec_port"))
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port
