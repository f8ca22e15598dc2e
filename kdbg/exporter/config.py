"""What ``kdbg exporter`` is asked for: where to listen, which labels, which drops."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from kdbg.errors import BadInput, KdbgError
from kdbg.trace import filters as flt

LABELS = ("reason", "location", "netns", "ifname")
DEFAULT_LABELS = ("reason", "location")
DEFAULT_LISTEN = "127.0.0.1:9469"


class ExporterError(KdbgError):
    """The exporter could not listen or serve."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/metrics"


def parse_listen(text: str) -> Listen:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6); port 0 picks a free one."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise BadInput(f"--listen wants ADDR:PORT, not {text!r}",
                       hint=f"e.g. {DEFAULT_LISTEN}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise BadInput(f"--listen wants an IP address, not {host!r}",
                       hint=f"e.g. {DEFAULT_LISTEN}") from None
    try:
        port = int(port_text)
    except ValueError:
        raise BadInput(f"not a port number: {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise BadInput(f"port out of range: {port}")
    return Listen(host, port)


def parse_labels(text: str) -> tuple[str, ...]:
    """A comma list of :data:`LABELS`, in the canonical order; ``""`` or ``none``: no label."""
    if text.strip().lower() in ("", "none"):
        return ()
    wanted = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = wanted - set(LABELS)
    if unknown:
        raise BadInput(f"unknown label {', '.join(sorted(unknown))!r}",
                       hint="choose from " + ",".join(LABELS))
    return tuple(name for name in LABELS if name in wanted)


@dataclass(frozen=True)
class ExporterConfig:
    """What ``kdbg exporter`` was asked for."""

    listen: Listen = field(default_factory=lambda: parse_listen(DEFAULT_LISTEN))
    labels: tuple[str, ...] = DEFAULT_LABELS
    filters: flt.PacketFilters = field(default_factory=flt.PacketFilters)
    duration: float | None = None

    @property
    def per_device(self) -> bool:
        """The kernel key must carry netns and ifname."""
        return "netns" in self.labels or "ifname" in self.labels
