"""The drop filters, compiled to C that runs in the kernel.

Values of one option are ORed, options are ANDed. A filter on addresses, ports
or protocol excludes packets whose headers could not be parsed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdbg.errors import BadInput
from kdbg.symbols.kallsyms import AddressRange, Kallsyms
from kdbg.symbols.reasons import ReasonTable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PROTOCOLS: dict[str, tuple[int, int]] = {
    # name: (IPPROTO number, family it implies or 0)
    "tcp": (6, 0),
    "udp": (17, 0),
    "sctp": (132, 0),
    "icmp": (1, 4),
    "icmp6": (58, 6),
}
NO_FILTER = "/* none */"
PROTO_NAMES = {num: name for name, (num, _fam) in PROTOCOLS.items()}


@dataclass(frozen=True)
class FilterSpec:
    """What to keep. Empty tuples mean 'no filter on this'."""

    reasons: tuple[int, ...] = ()
    locations: tuple[AddressRange, ...] = ()
    proto: str | None = None
    saddrs: tuple[IPNetwork, ...] = ()
    daddrs: tuple[IPNetwork, ...] = ()
    addrs: tuple[IPNetwork, ...] = ()
    sports: tuple[int, ...] = ()
    dports: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    netns: int | None = None
    ifname: str | None = None
    labels: tuple[str, ...] = field(default=(), compare=False)

    def describe(self) -> str:
        return " ".join(self.labels) if self.labels else "none"


@dataclass(frozen=True)
class PacketFilters:
    """The packet filters as the user gave them (names, not numbers): one set of fields
    for ``kdbg watch``, ``path``, ``diagnose``, ``report`` and ``exporter``."""

    reasons: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    proto: str | None = None
    saddrs: tuple[str, ...] = ()
    daddrs: tuple[str, ...] = ()
    addrs: tuple[str, ...] = ()
    sports: tuple[int, ...] = ()
    dports: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    netns: str | None = None
    ifname: str | None = None

    def resolve(self, reasons: ReasonTable,
                ksyms: Callable[[], Kallsyms] | None = None) -> FilterSpec:
        """Resolve names (reasons, symbols, namespaces) into what the kernel compares;
        ``ksyms`` is called only when there are locations to resolve."""
        labels: list[str] = []
        codes = []
        for name in self.reasons:
            codes.append(reasons.code(name))
            labels.append(f"reason={reasons.name(codes[-1])}")
        ranges = []
        if self.locations and ksyms is None:
            raise BadInput("a location filter needs the kernel's symbols")
        for loc in self.locations:
            assert ksyms is not None
            ranges.append(ksyms().resolve(loc))
            labels.append(f"location={ranges[-1].label}")
        if self.proto is not None:
            if self.proto not in PROTOCOLS:
                raise BadInput(f"unknown protocol {self.proto!r}",
                               hint="one of " + ", ".join(PROTOCOLS))
            labels.append(f"proto={self.proto}")

        def nets(key: str, values: tuple[str, ...]) -> tuple[IPNetwork, ...]:
            out = tuple(parse_network(v) for v in values)
            labels.extend(f"{key}={n}" for n in out)
            return out

        def ports(key: str, values: tuple[int, ...]) -> tuple[int, ...]:
            out = tuple(parse_port(v) for v in values)
            labels.extend(f"{key}={p}" for p in out)
            return out

        netns = parse_netns(self.netns) if self.netns is not None else None
        if netns is not None:
            labels.append(f"netns={netns}")
        ifname = parse_ifname(self.ifname) if self.ifname is not None else None
        if ifname is not None:
            labels.append(f"ifname={ifname}")
        return FilterSpec(
            reasons=tuple(codes), locations=tuple(ranges), proto=self.proto,
            saddrs=nets("saddr", self.saddrs), daddrs=nets("daddr", self.daddrs),
            addrs=nets("addr", self.addrs), sports=ports("sport", self.sports),
            dports=ports("dport", self.dports), ports=ports("port", self.ports),
            netns=netns, ifname=ifname, labels=tuple(labels),
        )

    def argv(self) -> list[str]:
        """The ``kdbg watch`` options that give these filters to another kdbg, which
        resolves the names against its own kernel (numbers differ between kernels)."""
        out: list[str] = []
        for flag, values in (("--reason", self.reasons), ("--location", self.locations),
                             ("--saddr", self.saddrs), ("--daddr", self.daddrs),
                             ("--addr", self.addrs), ("--sport", self.sports),
                             ("--dport", self.dports), ("--port", self.ports)):
            for v in values:
                out += [flag, str(v)]
        for flag, value in (("--proto", self.proto), ("--netns", self.netns),
                            ("--ifname", self.ifname)):
            if value is not None:
                out += [flag, value]
        return out


FILTER_FIELDS = tuple(PacketFilters.__dataclass_fields__)


def parse_network(text: str) -> IPNetwork:
    """``10.0.0.1``, ``10.0.0.0/24``, ``fd00::1`` or ``fd00::/64``."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise BadInput(f"not an IP address or prefix: {text!r}") from None


def parse_port(text: str | int) -> int:
    try:
        port = int(text)
    except ValueError:
        raise BadInput(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise BadInput(f"port out of range: {port}")
    return port


def parse_netns(text: str) -> int:
    """A netns inode number, or a path to a netns file (``/var/run/netns/X``, ``/proc/PID/ns/net``).

    A bare name is looked up under ``/var/run/netns``.
    """
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    m = re.fullmatch(r"net:\[(\d+)\]", text)
    if m:
        return int(m.group(1))
    path = Path(text) if "/" in text else Path("/var/run/netns", text)
    try:
        return os.stat(path).st_ino
    except OSError as err:
        raise BadInput(f"no network namespace at {path}: {err.strerror}") from None


def parse_ifname(text: str) -> str:
    if not text or len(text.encode()) > 15 or "/" in text or " " in text:
        raise BadInput(f"not an interface name: {text!r}")
    return text


# -- C generation -------------------------------------------------------------

def _any(terms: list[str]) -> str:
    return "(" + " || ".join(terms) + ")"


def _net_match(var: str, net: IPNetwork) -> str:
    """C expression: u32[4] ``var`` (network order words) lies in ``net``."""
    raw = net.network_address.packed
    nbytes = len(raw)
    # an IPv4 network also matches ARP's sender and target addresses (family 3), as a
    # pcap 'host' filter does
    terms = ["(family == 4 || family == 3)" if net.version == 4 else "family == 6"]
    mask_bits = net.prefixlen
    for i in range(nbytes // 4):
        bits = max(0, min(32, mask_bits - 32 * i))
        if bits == 0:
            break
        mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
        word = int.from_bytes(raw[4 * i : 4 * i + 4], "big") & mask
        # The array holds network-order bytes; compare them as loaded (little endian).
        le_mask = int.from_bytes(mask.to_bytes(4, "big"), "little")
        le_word = int.from_bytes(word.to_bytes(4, "big"), "little")
        terms.append(f"({var}[{i}] & 0x{le_mask:08x}) == 0x{le_word:08x}")
    return "(" + " && ".join(terms) + ")"


def c_early(spec: FilterSpec) -> str:
    """Statements over ``reason`` and ``loc``: the cheapest filters, run first."""
    out = []
    if spec.reasons:
        out.append(f"if (!{_any([f'reason == {r}' for r in spec.reasons])}) return 0;")
    if spec.locations:
        terms = [
            f"(loc == 0x{r.start:x}ULL)" if r.end == r.start + 1
            else f"(loc >= 0x{r.start:x}ULL && loc < 0x{r.end:x}ULL)"
            for r in spec.locations
        ]
        out.append(f"if (!{_any(terms)}) return 0;")
    return "\n\t\t".join(out) or NO_FILTER


def c_dev(spec: FilterSpec) -> str:
    """Statements over ``netns`` and ``ifname`` (char[16])."""
    out = []
    if spec.netns is not None:
        out.append(f"if (netns != {spec.netns}U) return 0;")
    if spec.ifname is not None:
        name = spec.ifname.encode() + b"\0"
        terms = [f"ifname[{i}] != {b}" for i, b in enumerate(name)]
        out.append(f"if ({' || '.join(terms)}) return 0;")
    return "\n\t\t".join(out) or NO_FILTER


def c_packet(spec: FilterSpec) -> str:
    """Statements over the parsed headers: ``family l4proto has_ports sport dport s d``."""
    out = []
    if spec.proto is not None:
        num, fam = PROTOCOLS[spec.proto]
        cond = f"l4proto == {num}" + (f" && family == {fam}" if fam else " && family != 0")
        out.append(f"if (!({cond})) return 0;")
    for var, nets in (("s", spec.saddrs), ("d", spec.daddrs)):
        if nets:
            out.append(f"if (!{_any([_net_match(var, n) for n in nets])}) return 0;")
    if spec.addrs:
        terms = [_net_match(v, n) for n in spec.addrs for v in ("s", "d")]
        out.append(f"if (!{_any(terms)}) return 0;")
    for var, ports in (("sport", spec.sports), ("dport", spec.dports)):
        if ports:
            out.append(f"if (!(has_ports && {_any([f'{var} == {p}' for p in ports])})) return 0;")
    if spec.ports:
        terms = [f"{v} == {p}" for p in spec.ports for v in ("sport", "dport")]
        out.append(f"if (!(has_ports && {_any(terms)})) return 0;")
    return "\n\t\t".join(out) or NO_FILTER
