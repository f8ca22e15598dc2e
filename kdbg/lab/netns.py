"""The KGDBoE lab's own network: a namespace holding a tap that QEMU's e1000 uses.

Under QEMU user networking with ``restrict=on``, KGDBoE's UDP replies never came back
to the host (seen on this project's lab, with the real module). So a KGDBoE lab
gets a network namespace ``kdbg-<name>`` with a persistent tap ``kdbgtap0`` at
``10.213.0.1/24``; the guest's e1000 is ``10.213.0.2/24``. QEMU itself stays in the
host's namespace (so its gdb and exec ports stay on the host's loopback) and gets
the tap as an open file descriptor, opened from a thread that entered the
namespace. gdb for KGDBoE runs in the namespace: ``ip netns exec kdbg-<name> gdb ...``.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import subprocess
import threading
from pathlib import Path

from kdbg.errors import LabError

TAP = "kdbgtap0"
HOST_CIDR = "10.213.0.1/24"
GUEST_CIDR = "10.213.0.2/24"
GUEST_IP = "10.213.0.2"
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def netns_name(lab: str) -> str:
    """The namespace of lab ``lab``."""
    return f"kdbg-{lab}"


def exists(ns: str) -> bool:
    return Path("/var/run/netns", ns).exists()


def _ip(*argv: str) -> None:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")


def create(lab: str) -> str:
    """Make the lab's namespace with its tap up at 10.213.0.1/24; returns its name."""
    ns = netns_name(lab)
    if exists(ns):
        raise LabError(f"network namespace {ns} already exists", hint=f"ip netns del {ns}")
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "tuntap", "add", "dev", TAP, "mode", "tap")
        _ip("-n", ns, "addr", "add", HOST_CIDR, "dev", TAP)
        _ip("-n", ns, "link", "set", TAP, "up")
    except LabError:
        delete(ns)
        raise
    return ns


def delete(ns: str) -> None:
    """Remove a namespace kdbg made (and the tap inside it); absent is fine."""
    if exists(ns):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def open_tap(ns: str, dev: str = TAP) -> int:
    """An open, inheritable fd on tap ``dev`` inside namespace ``ns``, for QEMU's ``fd=``."""
    result: dict[str, int | BaseException] = {}

    def in_namespace() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            nsfd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(nsfd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns}")
            finally:
                os.close(nsfd)
            fd = os.open("/dev/net/tun", os.O_RDWR)
            ifr = struct.pack("16sH", dev.encode(), IFF_TAP | IFF_NO_PI)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            result["fd"] = fd
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = err

    # setns() changes only the calling thread; this thread ends right after.
    t = threading.Thread(target=in_namespace)
    t.start()
    t.join()
    if "error" in result:
        raise LabError(f"cannot open tap {dev} in {ns}: {result['error']}")
    fd = result["fd"]
    assert isinstance(fd, int)
    os.set_inheritable(fd, True)
    return fd
