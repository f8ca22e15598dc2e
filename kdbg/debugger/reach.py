"""Is anything behind a gdb endpoint? Asked before gdb starts, without touching the stub.

gdb retries a refused TCP connect for ``tcp connect-timeout`` (15 s by default), and
only after it has started and loaded a vmlinux of several hundred MB. So
:meth:`kdbg.debugger.Session.connect` asks this module first, and gdb itself runs with
``set tcp auto-retry off`` and a short ``tcp connect-timeout``.

No connection is made to a local endpoint: QEMU's stub stops the guest on every new
connection (and leaves it stopped when the connection closes without a detach), so a
probe that connected would be a debugger session of its own. Instead the host's
listening sockets are read from ``/proc/net``: a TCP or UDP port bound on this host (in
this network namespace) or a listening Unix socket. A serial endpoint on another host
is probed with a plain connect (a QEMU serial port has no such side effect); other
remote endpoints are left to gdb's own short timeout. Which check fits an endpoint is
its transport's ``reach`` (:mod:`kdbg.transports`), the hints its ``reach_hint`` and
``attach_hint``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path

from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.errors import TargetUnreachable
from kdbg.transports import Reach

PROC_NET = Path("/proc/net")
PROBE_TIMEOUT = 2.0  # seconds for a remote serial connect
_TCP_LISTEN = "0A"
_UNIX_LISTENING = 0x00010000  # __SO_ACCEPTCON in /proc/net/unix's Flags


def check(ep: Endpoint, *, proc_net: Path = PROC_NET, timeout: float = PROBE_TIMEOUT) -> str:
    """Raise :class:`TargetUnreachable` (one line) when nothing is behind ``ep``.

    Returns how it decided (for logs): "listening", "connected", "device" or
    "not checked (remote)".
    """
    if ep.device is not None:
        if not os.path.exists(ep.device):
            raise TargetUnreachable(f"no serial device {ep.device}")
        return "device"
    if ep.path is not None:
        return _check_unix(ep, proc_net)
    addrs = _addresses(ep)
    udp = ep.transport.reach is Reach.BOUND_UDP
    if any(_is_local(a) for a in addrs):
        ports = _bound_ports(proc_net, "udp" if udp else "tcp")
        if ep.port not in ports:
            what = "no UDP socket is bound to" if udp else "nothing listens on"
            raise TargetUnreachable(f"{what} port {ep.port} of {ep.host} (gdb endpoint {ep})",
                                    hint=ep.transport.reach_hint)
        return "listening"
    if ep.transport.reach is Reach.SERIAL:
        try:
            with socket.create_connection((ep.host, ep.port), timeout=timeout):
                return "connected"
        except OSError as err:
            raise TargetUnreachable(f"cannot connect to {ep}: {_reason(err)}",
                                    hint=ep.transport.reach_hint) from None
    return "not checked (remote)"


def _check_unix(ep: Endpoint, proc_net: Path) -> str:
    path, hint = ep.path or "", ep.transport.reach_hint
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise TargetUnreachable(f"no socket at {path} (gdb endpoint {ep})",
                                hint=hint) from None
    except OSError as err:
        raise TargetUnreachable(f"cannot reach {path}: {_reason(err)}", hint=hint) from None
    if not stat.S_ISSOCK(mode):
        raise TargetUnreachable(f"{path} is not a socket (gdb endpoint {ep})")
    if path not in _unix_listeners(proc_net):
        raise TargetUnreachable(f"nothing listens on {path} (gdb endpoint {ep})",
                                hint=hint)
    return "listening"


def _addresses(ep: Endpoint) -> list[str]:
    try:
        infos = socket.getaddrinfo(ep.host, ep.port, proto=socket.IPPROTO_TCP)
    except OSError as err:
        raise TargetUnreachable(f"cannot resolve {ep.host}: {_reason(err)}") from None
    return [str(info[4][0]) for info in infos]


def _is_local(addr: str) -> bool:
    """Whether ``addr`` is one of this host's addresses (binding to it succeeds)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr, 0))
        except OSError:
            return False
    return True


def _bound_ports(proc_net: Path, proto: str) -> set[int]:
    """Local ports with a listening TCP socket, or any bound UDP socket."""
    ports: set[int] = set()
    for name in (proto, f"{proto}6"):
        with contextlib.suppress(OSError):
            for line in (proc_net / name).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 4:
                    continue
                if proto == "tcp" and fields[3] != _TCP_LISTEN:
                    continue
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _unix_listeners(proc_net: Path) -> set[str]:
    paths: set[str] = set()
    with contextlib.suppress(OSError):
        for line in (proc_net / "unix").read_text().splitlines()[1:]:
            fields = line.split(maxsplit=7)
            if len(fields) == 8 and int(fields[3], 16) & _UNIX_LISTENING:
                paths.add(fields[7])
    return paths


def _reason(err: OSError) -> str:
    if err.errno is not None and err.errno in errno.errorcode:
        return os.strerror(err.errno)
    return str(err) or type(err).__name__
