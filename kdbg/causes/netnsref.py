"""Finding a network namespace by the inode a drop record carries, and reading it.

A drop names its namespace by inode only. To read that namespace's sockets,
sysctls or ruleset, kdbg needs a file that refers to it: a name under
``/var/run/netns``, or ``/proc/PID/ns/net`` of a process inside it. Commands then
run in it through ``nsenter --net=FILE``; every one is read-only.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kdbg.errors import KdbgError, ProbeUnavailable

NETNS_DIR = Path("/var/run/netns")
TIMEOUT = 30.0  # a loaded TCG guest takes seconds to start nsenter


class NetnsGone(KdbgError):
    """The namespace a drop happened in no longer exists (or no file refers to it)."""


@dataclass(frozen=True)
class NetnsRef:
    """A file that refers to network namespace ``inode``."""

    inode: int
    path: str
    name: str | None = None  # its name under /var/run/netns
    own: bool = False  # kdbg's own namespace: run commands directly

    @property
    def label(self) -> str:
        return f"{self.inode} ({self.name})" if self.name else str(self.inode)

    def alive(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def argv(self, cmd: list[str]) -> list[str]:
        """``cmd`` run inside this namespace."""
        if self.own:
            return cmd
        return ["nsenter", f"--net={self.path}", *cmd]

    def shell(self, cmd: str) -> str:
        """``cmd`` as a user would type it to run it in this namespace."""
        if self.own:
            return cmd
        if self.name:
            return f"ip netns exec {shlex.quote(self.name)} {cmd}"
        return f"nsenter --net={self.path} {cmd}"

    def run(self, cmd: list[str], timeout: float = TIMEOUT, what: str | None = None) -> str:
        """stdout of read-only ``cmd`` in this namespace; NetnsGone if it vanished,
        ProbeUnavailable if the tool is missing, KdbgError if it failed. ``what`` names
        the command in messages (instead of its whole text)."""
        what = what or shlex.join(cmd)
        if not self.own and shutil.which("nsenter") is None:
            raise ProbeUnavailable("nsenter is not installed", hint="install util-linux")
        if shutil.which(cmd[0]) is None and not cmd[0].startswith("/"):
            raise ProbeUnavailable(f"{cmd[0]} is not installed")
        if not self.alive():
            raise NetnsGone(f"network namespace {self.label} no longer exists")
        try:
            proc = subprocess.run(self.argv(cmd), capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise KdbgError(f"{what} in netns {self.label} took over {timeout:.0f} s"
                            ) from None
        if proc.returncode != 0:
            if not self.alive():
                raise NetnsGone(f"network namespace {self.label} no longer exists")
            err = proc.stderr.strip().splitlines()
            raise KdbgError(f"{what} in netns {self.label} failed: "
                            f"{err[-1] if err else proc.returncode}")
        return proc.stdout


def _ino(path: Path | str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def named() -> list[tuple[str, int]]:
    """Each name under /var/run/netns with its namespace's inode, by name (one that
    vanishes while they are read is left out)."""
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []
    return [(name, ino) for name in names if (ino := _ino(NETNS_DIR / name)) is not None]


def find(inode: int) -> NetnsRef:
    """A reference to namespace ``inode``: kdbg's own, a named one, or a process's.

    NetnsGone when nothing refers to it any more.
    """
    if _ino("/proc/self/ns/net") == inode:
        return NetnsRef(inode, "/proc/self/ns/net", own=True)
    for name, ino in named():
        if ino == inode:
            return NetnsRef(inode, str(NETNS_DIR / name), name=name)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            path = f"/proc/{entry.name}/ns/net"
            if _ino(path) == inode:
                return NetnsRef(inode, path)
    raise NetnsGone(f"network namespace {inode} no longer exists "
                    "(no name under /var/run/netns and no process in it)")


class NetnsCache:
    """``find()`` once per inode, again only when the file stops referring to it."""

    def __init__(self) -> None:
        self._refs: dict[int, NetnsRef] = {}

    def get(self, inode: int) -> NetnsRef:
        ref = self._refs.get(inode)
        if ref is None or not ref.alive():
            ref = self._refs[inode] = find(inode)
        return ref
