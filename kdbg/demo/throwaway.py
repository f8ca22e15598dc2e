"""Throw-away network namespaces for demos, tests and benchmarks.

Traffic made here stays inside namespaces kdbg created: two namespaces joined
by a veth pair, addresses from 10.77.0.0/16 and fd77::/16 that exist nowhere
else, and every namespace deleted on exit, also on errors.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from kdbg.errors import KdbgError

NETNS_DIR = Path("/var/run/netns")
PY = "/usr/bin/python3"


class NetnsError(KdbgError):
    """A namespace, link or rule could not be set up."""


def run_checked(argv: list[str], *, input_: str | None = None, check: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; with ``check``, a failure is a NetnsError carrying its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, input=input_, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


@dataclass
class Netns:
    """One named namespace under /var/run/netns."""

    name: str

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    @property
    def inode(self) -> int:
        return os.stat(self.path).st_ino

    def run(self, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return run_checked(["ip", "netns", "exec", self.name, *argv], **kw)  # type: ignore[arg-type]

    def popen(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kw)  # type: ignore[call-overload]

    def python(self, code: str, timeout: float = 60) -> str:
        """Run Python code inside the namespace; return its stdout."""
        return self.run([PY, "-c", code], timeout=timeout).stdout


SEND_UDP_CODE = """
import socket, sys
fam = socket.AF_INET6 if ':' in {dst!r} else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind(({src!r}, {sport}))
for i in range({count}):
    s.sendto(b'kdbg-%d' % i, ({dst!r}, {dport}))
"""

# As fast as a Python loop can: one socket, no pause, no per-datagram formatting.
FLOOD_UDP_CODE = """
import socket
fam = socket.AF_INET6 if ':' in {dst!r} else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind(({src!r}, {sport}))
payload, to, send = b'kdbg-storm-0123', ({dst!r}, {dport}), s.sendto
for _ in range({count}):
    send(payload, to)
"""

SYN_CODE = """
import socket
fam = socket.AF_INET6 if ':' in {dst!r} else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(2)
try:
    s.connect(({dst!r}, {dport}))
except OSError:
    pass
"""


@dataclass
class PairLab:
    """Two namespaces, ``<prefix>-a`` and ``<prefix>-b``, deleted by :meth:`down`.

    ``a`` has 10.77.N.1 and fd77:N::1 on ``veth-a``, ``b`` has 10.77.N.2 and
    fd77:N::2 on ``veth-b``; a subclass's :meth:`build` says what joins them.
    """

    prefix: str = field(default_factory=lambda: f"kdbg{os.getpid()}")
    subnet: int = 1
    a: Netns = field(init=False)
    b: Netns = field(init=False)

    def __post_init__(self) -> None:
        self.a = Netns(f"{self.prefix}-a")
        self.b = Netns(f"{self.prefix}-b")

    addr_a = property(lambda self: f"10.77.{self.subnet}.1")
    addr_b = property(lambda self: f"10.77.{self.subnet}.2")
    addr6_a = property(lambda self: f"fd77:{self.subnet}::1")
    addr6_b = property(lambda self: f"fd77:{self.subnet}::2")

    def namespaces(self) -> tuple[Netns, ...]:
        return (self.a, self.b)

    def ends(self) -> tuple[tuple[Netns, str, str, str], ...]:
        """(namespace, device, IPv4, IPv6) of ``a`` and of ``b``."""
        return ((self.a, "veth-a", self.addr_a, self.addr6_a),
                (self.b, "veth-b", self.addr_b, self.addr6_b))

    def build(self) -> None:
        raise NotImplementedError

    def up(self) -> Self:
        """Build it; on any failure delete what was made, then raise."""
        try:
            self.build()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Delete the namespaces (their links, and a bridge, go with them)."""
        for ns in self.namespaces():
            if ns.path.exists():
                run_checked(["ip", "netns", "del", ns.name], check=False)

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def _address(ns: Netns, dev: str, v4: str, v6: str) -> None:
    ns.run(["ip", "addr", "add", f"{v4}/24", "dev", dev])
    ns.run(["ip", "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
    ns.run(["ip", "link", "set", dev, "up"])


@dataclass
class VethLab(PairLab):
    """Namespaces ``<prefix>-a`` and ``<prefix>-b`` joined by ``veth-a``/``veth-b``.

    ``a`` has 10.77.N.1 and fd77:N::1, ``b`` has 10.77.N.2 and fd77:N::2.
    """

    def build(self) -> None:
        for ns in (self.a, self.b):
            run_checked(["ip", "netns", "add", ns.name])
        run_checked(["ip", "link", "add", "veth-a", "netns", self.a.name,
                     "type", "veth", "peer", "name", "veth-b", "netns", self.b.name])
        for ns, dev, v4, v6 in self.ends():
            ns.run(["ip", "link", "set", "lo", "up"])
            _address(ns, dev, v4, v6)
        # Resolve neighbours once so the first datagrams are not held in ARP/NDISC.
        allow_ping(self.a)
        for src, dst in ((self.addr_a, self.addr_b), (self.addr6_a, self.addr6_b)):
            run_checked(icmp_echo_argv(self.a, src, dst, ident=1, timeout=3), check=False)

    def drop_udp(self, dport: int, *, v6: bool = False) -> None:
        """An iptables DROP rule in ``b``'s INPUT chain for UDP to ``dport``."""
        tool = "ip6tables" if v6 else "iptables"
        self.b.run([tool, "-A", "INPUT", "-p", "udp", "--dport", str(dport), "-j", "DROP"])

    def send_udp(self, count: int, dport: int, *, sport: int = 40000, v6: bool = False) -> None:
        """``count`` datagrams from ``a`` to ``b``."""
        src, dst = (self.addr6_a, self.addr6_b) if v6 else (self.addr_a, self.addr_b)
        self.a.python(SEND_UDP_CODE.format(src=src, dst=dst, sport=sport, dport=dport, count=count))


@dataclass
class VethBridgeLab(VethLab):
    """``a`` and ``b`` joined by ``veth-a``/``veth-b``, where ``veth-b`` is a port of the
    bridge ``br0`` in ``b``, which holds ``b``'s addresses: a packet from ``a`` to ``b``
    crosses veth-a, veth-b and br0, in two namespaces.
    """

    prefix: str = field(default_factory=lambda: f"kdbgvb{os.getpid()}")

    def build(self) -> None:
        for ns in (self.a, self.b):
            run_checked(["ip", "netns", "add", ns.name])
            ns.run(["ip", "link", "set", "lo", "up"])
        run_checked(["ip", "link", "add", "veth-a", "netns", self.a.name,
                     "type", "veth", "peer", "name", "veth-b", "netns", self.b.name])
        self.b.run(["ip", "link", "add", "br0", "type", "bridge"])
        self.b.run(["ip", "link", "set", "veth-b", "master", "br0"])
        self.b.run(["ip", "link", "set", "veth-b", "up"])
        _address(self.a, "veth-a", self.addr_a, self.addr6_a)
        _address(self.b, "br0", self.addr_b, self.addr6_b)
        allow_ping(self.a)
        for src, dst in ((self.addr_a, self.addr_b), (self.addr6_a, self.addr6_b)):
            run_checked(icmp_echo_argv(self.a, src, dst, ident=1, timeout=3), check=False)


# ICMP echo over a datagram ("ping") socket: the kernel writes the identifier
# (the bound port) and the checksum. Needs net.ipv4.ping_group_range to include
# the caller's group, which allow_ping() sets inside a namespace.
ICMP_ECHO_CODE = """
import socket, struct, time
v6 = ':' in {dst!r}
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
s.bind(({src!r}, {ident}))
s.settimeout({timeout})
for seq in range(1, {count} + 1):
    s.sendto(struct.pack('!BBHHH', 128 if v6 else 8, 0, 0, {ident}, seq) + b'kdbg-path',
             ({dst!r}, 0))
    try:
        s.recv(2048)
    except socket.timeout:
        pass
    if seq < {count}:
        time.sleep({interval})
"""


def allow_ping(ns: Netns) -> None:
    """Let root open ICMP datagram sockets in ``ns`` (no raw socket, no ping binary)."""
    ns.run(["sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647"])


def icmp_echo_argv(ns: Netns, src: str, dst: str, *, ident: int, count: int = 1,
                   interval: float = 0.2, timeout: float = 1.0) -> list[str]:
    """argv that sends ``count`` echo requests from ``ns`` with identifier ``ident``,
    waiting for each reply (up to ``timeout`` seconds)."""
    code = ICMP_ECHO_CODE.format(src=src, dst=dst, ident=ident, count=count,
                                 interval=interval, timeout=timeout)
    return ["ip", "netns", "exec", ns.name, PY, "-c", code]


@dataclass
class BridgeLab(PairLab):
    """Namespaces ``a`` and ``b`` joined through a bridge in a third, ``br``.

    ``a``'s ``veth-a`` pairs with ``br-a`` and ``b``'s ``veth-b`` with ``br-b``; both
    are ports of ``br0`` in ``br``. ``a`` has 10.77.N.1 and fd77:N::1, ``b`` has
    10.77.N.2 and fd77:N::2; the bridge has no address.
    """

    prefix: str = field(default_factory=lambda: f"kdbgbr{os.getpid()}")
    subnet: int = 2
    br: Netns = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.br = Netns(f"{self.prefix}-br")

    def namespaces(self) -> tuple[Netns, ...]:
        return (self.a, self.b, self.br)

    def build(self) -> None:
        for ns in self.namespaces():
            run_checked(["ip", "netns", "add", ns.name])
            ns.run(["ip", "link", "set", "lo", "up"])
            allow_ping(ns)
        self.br.run(["ip", "link", "add", "br0", "type", "bridge"])
        for ns, dev, v4, v6 in self.ends():
            port = "br-" + dev.removeprefix("veth-")
            run_checked(["ip", "link", "add", dev, "netns", ns.name, "type", "veth",
                         "peer", "name", port, "netns", self.br.name])
            self.br.run(["ip", "link", "set", port, "master", "br0"])
            self.br.run(["ip", "link", "set", port, "up"])
            _address(ns, dev, v4, v6)
        self.br.run(["ip", "link", "set", "br0", "up"])
        # Resolve neighbours and teach the bridge both MACs, so the packets
        # traced later are forwarded (not flooded as clones).
        run_checked(icmp_echo_argv(self.a, self.addr_a, self.addr_b, ident=1, timeout=3),
                    check=False)


@dataclass
class RoutedLab(PairLab):
    """Namespaces ``a`` and ``b`` in two subnets, routed through a third, ``r``.

    ``a``'s ``veth-a`` pairs with ``r``'s ``veth-ra`` (10.77.N.0/24, fd77:N::/64; ``r`` is
    .254 and ::fe), ``b``'s ``veth-b`` with ``r``'s ``veth-rb`` (10.78.N.0/24,
    fd78:N::/64). ``r`` forwards both families; ``a`` and ``b`` route everything through
    it. Packets between ``a`` and ``b`` cross ``r``'s FORWARD hook.
    """

    prefix: str = field(default_factory=lambda: f"kdbgrt{os.getpid()}")
    subnet: int = 3
    r: Netns = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.r = Netns(f"{self.prefix}-r")

    addr_b = property(lambda self: f"10.78.{self.subnet}.2")
    addr6_b = property(lambda self: f"fd78:{self.subnet}::2")

    def namespaces(self) -> tuple[Netns, ...]:
        return (self.a, self.r, self.b)

    def build(self) -> None:
        for ns in self.namespaces():
            run_checked(["ip", "netns", "add", ns.name])
            ns.run(["ip", "link", "set", "lo", "up"])
        n = self.subnet
        for (ns, dev, v4, v6), (port, net) in zip(self.ends(), (("veth-ra", 77),
                                                                 ("veth-rb", 78)), strict=True):
            run_checked(["ip", "link", "add", dev, "netns", ns.name, "type", "veth",
                         "peer", "name", port, "netns", self.r.name])
            _address(ns, dev, v4, v6)
            _address(self.r, port, f"10.{net}.{n}.254", f"fd{net}:{n}::fe")
            ns.run(["ip", "route", "add", "default", "via", f"10.{net}.{n}.254"])
            ns.run(["ip", "-6", "route", "add", "default", "via", f"fd{net}:{n}::fe"])
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            self.r.run(["sysctl", "-q", "-w", key])
        allow_ping(self.a)
        for src, dst in ((self.addr_a, self.addr_b), (self.addr6_a, self.addr6_b)):
            run_checked(icmp_echo_argv(self.a, src, dst, ident=1, timeout=3), check=False)
