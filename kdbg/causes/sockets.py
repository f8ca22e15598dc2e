"""The socket tables of a network namespace, read from ``/proc/net/{tcp,udp}{,6}``.

Read through the namespace (``nsenter --net``), parsed here as pure text so the
parser is tested on captured tables. Only what a drop's cause needs: protocol,
family, local address and port, state, queues and (UDP) the drop counter.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kdbg.causes.netnsref import NetnsRef
from kdbg.trace.cause import Listener

TABLES = ("tcp", "tcp6", "udp", "udp6")
TCP_LISTEN = 0x0A
UDP_UNCONNECTED = 0x07  # TCP_CLOSE: a bound, unconnected datagram socket
MARK = "== kdbg:"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Sock:
    """One row of a ``/proc/net`` socket table."""

    proto: str  # tcp | udp
    family: str  # ipv4 | ipv6
    addr: IPAddress
    port: int
    state: int
    tx_queue: int
    rx_queue: int
    inode: int
    drops: int | None = None  # UDP only

    @property
    def receiving(self) -> bool:
        """Takes new packets: a TCP listener or an unconnected UDP socket."""
        return self.state == (TCP_LISTEN if self.proto == "tcp" else UDP_UNCONNECTED)

    @property
    def endpoint(self) -> str:
        return f"[{self.addr}]:{self.port}" if self.family == "ipv6" else f"{self.addr}:{self.port}"

    def listener(self) -> Listener:
        """This socket as a cause lists it (a TCP listener's ``rx_queue`` is its accept
        queue; /proc shows no listen() backlog)."""
        return Listener(self.proto, self.family, str(self.addr), self.port,
                        f"{self.proto} {self.endpoint}", self.rx_queue,
                        self.proto == "tcp" and self.state == TCP_LISTEN, self.drops)

    def accepts(self, family: str, addr: IPAddress | None) -> bool:
        """Would this socket take a packet for ``addr`` of ``family``? (wildcards,
        and an IPv6 wildcard takes IPv4 unless it is v6only, which /proc does not show)"""
        if self.addr.is_unspecified:
            return self.family == family or self.family == "ipv6"
        if addr is None:
            return False
        if self.family == "ipv6" and family == "ipv4":
            mapped = getattr(self.addr, "ipv4_mapped", None)
            return mapped == addr
        return self.addr == addr


def _addr(hexaddr: str) -> IPAddress:
    raw = bytes.fromhex(hexaddr)
    # Each 32-bit word is printed in host (little-endian) order.
    fixed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(fixed) == 4:
        return ipaddress.IPv4Address(fixed)
    return ipaddress.IPv6Address(fixed)


def parse_table(name: str, text: str) -> list[Sock]:
    """Rows of ``/proc/net/<name>`` (``tcp``, ``tcp6``, ``udp`` or ``udp6``)."""
    proto = name.rstrip("6")
    family = "ipv6" if name.endswith("6") else "ipv4"
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or ":" not in cols[1]:
            continue
        local, port = cols[1].split(":")
        tx, rx = (int(v, 16) for v in cols[4].split(":"))
        drops = int(cols[12]) if proto == "udp" and len(cols) > 12 else None
        out.append(Sock(proto, family, _addr(local), int(port, 16), int(cols[3], 16),
                        tx, rx, int(cols[9]), drops))
    return out


def parse_dump(text: str) -> list[Sock]:
    """The output of :func:`dump_cmd`: every table, each after a marker line."""
    out: list[Sock] = []
    name: str | None = None
    chunk: list[str] = []
    for line in [*text.splitlines(), f"{MARK} end"]:
        if line.startswith(MARK):
            if name is not None:
                out += parse_table(name, "\n".join(chunk))
            name, chunk = line[len(MARK):].strip(), []
        else:
            chunk.append(line)
    return out


def dump_cmd() -> list[str]:
    """One command that prints every table (one process per namespace read)."""
    script = "; ".join(f"echo '{MARK} {t}'; cat /proc/net/{t} 2>/dev/null" for t in TABLES)
    return ["sh", "-c", script]


def read(ns: NetnsRef) -> list[Sock]:
    """The sockets of namespace ``ns`` (read-only)."""
    return parse_dump(ns.run(dump_cmd(), what="reading /proc/net/{tcp,udp}{,6}"))
