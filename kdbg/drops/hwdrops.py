"""Hardware drops: packets a NIC traps and reports through devlink.

A driver that supports devlink traps (mlxsw, netdevsim, ...) hands each trapped
packet to ``devlink_trap_report()``, whose tracepoint kdbg's program reads raw:
the device, the trap and its group, the input port, and the packet's addresses
when the driver set its network header. The trap's action (drop, trap, mirror)
comes from devlink's netlink interface, the way ``devlink trap show`` gets it.

Counts are kept per CPU in the kernel as for software drops; ``kdbg watch --hw``
also streams each report.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kdbg.dirs import BPF_DIR
from kdbg.drops import devlink
from kdbg.errors import BadInput, ProbeUnavailable
from kdbg.signals import StopSignals
from kdbg.symbols.btf import Btf
from kdbg.trace import offsets as trace_offsets
from kdbg.trace.event import IPAddress, addresses
from kdbg.trace.filters import PROTO_NAMES
from kdbg.trace.lines import LineSink
from kdbg.trace.probe import RingProbe, check_privileges
from kdbg.trace.render import render

TEMPLATE = BPF_DIR / "devlink_trap.bpf.c"
FUNC_NAME = "kdbg_on_devlink_trap"
RAW_TRACEPOINT = "devlink_trap_report"
TRACEPOINT = "devlink:devlink_trap_report"

FIELDS: dict[str, tuple[str, ...]] = {
    "DEVLINK_DEV": ("devlink.dev",),
    "DEVICE_NAME": ("device.kobj.name",),
    "DEVICE_BUS": ("device.bus",),
    "BUS_NAME": ("bus_type.name",),
    "DEVICE_DRIVER": ("device.driver",),
    "DRIVER_NAME": ("device_driver.name",),
    "MD_TRAP_NAME": ("devlink_trap_metadata.trap_name",),
    "MD_GROUP_NAME": ("devlink_trap_metadata.trap_group_name",),
    "MD_INPUT_DEV": ("devlink_trap_metadata.input_dev",),
    "MD_TRAP_TYPE": ("devlink_trap_metadata.trap_type",),
    "DEV_NAME": ("net_device.name",),
    "SKB_HEAD": ("sk_buff.head",),
    "SKB_NETWORK_HDR": ("sk_buff.network_header",),
    "SKB_LEN": ("sk_buff.len",),
}

# ctypes mirror of bpf/hw_event.h (tests/unit/test_hwdrops.py keeps them in step)
BUSLEN, DEVLEN, DRVLEN, TRAPLEN, GROUPLEN, IFNAMSIZ = 16, 32, 16, 40, 32, 16
CTR_LOST, CTR_STATS_FULL = 0, 1
NR_CTRS = 2


class RawHwEvent(ct.Structure):
    """``struct kdbg_hw_event``: only :meth:`HwDecoder.decode` touches it."""

    _fields_ = [
        ("time_ns", ct.c_uint64),
        ("cpu", ct.c_uint32),
        ("len", ct.c_uint32),
        ("trap_type", ct.c_uint32),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("family", ct.c_uint8),
        ("l4proto", ct.c_uint8),
        ("l4_valid", ct.c_uint8),
        ("pad0", ct.c_uint8),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
        ("bus", ct.c_char * BUSLEN),
        ("device", ct.c_char * DEVLEN),
        ("driver", ct.c_char * DRVLEN),
        ("trap", ct.c_char * TRAPLEN),
        ("group", ct.c_char * GROUPLEN),
        ("input_port", ct.c_char * IFNAMSIZ),
    ]


class RawHwKey(ct.Structure):
    """``struct kdbg_hw_key``."""

    _fields_ = [
        ("bus", ct.c_char * BUSLEN),
        ("device", ct.c_char * DEVLEN),
        ("trap", ct.c_char * TRAPLEN),
        ("group", ct.c_char * GROUPLEN),
        ("input_port", ct.c_char * IFNAMSIZ),
    ]


class NoDevlink(ProbeUnavailable):
    """No devlink device to report hardware drops from."""


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace")


@dataclass(frozen=True)
class HwDropEvent:
    """One packet a device trapped, as kdbg reports it."""

    time_ns: int
    cpu: int
    device: str  # "bus/dev", as devlink(8) names it
    driver: str
    trap: str
    group: str
    action: str | None  # drop, trap or mirror (from netlink); None if not known
    trap_type: str  # drop, exception or control
    input_port: str | None
    len: int
    family: str | None
    proto: str | None
    saddr: IPAddress | None
    daddr: IPAddress | None
    sport: int | None
    dport: int | None

    def to_json(self) -> dict[str, Any]:
        """The documented ``{"type": "hw_drop", ...}`` record (docs/exporter.md)."""
        rec: dict[str, Any] = {"type": "hw_drop"}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            rec[name] = str(value) if isinstance(value, ipaddress._BaseAddress) else value
        return rec


class HwDecoder:
    """Raw records -> :class:`HwDropEvent`, with the trap's action from netlink."""

    def __init__(self, traps: Callable[[], dict[tuple[str, str], devlink.Trap]] = devlink.traps,
                 refresh_s: float = 2.0) -> None:
        self._traps_of = traps
        self._traps: dict[tuple[str, str], devlink.Trap] = {}
        self._read_at = -1e9
        self._refresh_s = refresh_s
        self.wall_offset_ns = time.time_ns() - time.monotonic_ns()

    def _trap(self, device: str, name: str) -> devlink.Trap | None:
        # Actions change (devlink trap set): re-read, at most every refresh_s.
        if time.monotonic() - self._read_at >= self._refresh_s:
            self._traps = self._traps_of()
            self._read_at = time.monotonic()
        return self._traps.get((device, name))

    def decode(self, raw: RawHwEvent) -> HwDropEvent:
        device = f"{_text(raw.bus)}/{_text(raw.device)}"
        trap = _text(raw.trap)
        known = self._trap(device, trap)
        saddr, daddr = addresses(raw.family, raw.saddr, raw.daddr)
        return HwDropEvent(
            time_ns=raw.time_ns + self.wall_offset_ns, cpu=raw.cpu, device=device,
            driver=_text(raw.driver), trap=trap, group=_text(raw.group),
            action=known.action if known else None,
            trap_type=devlink.TRAP_TYPES.get(raw.trap_type, str(raw.trap_type)),
            input_port=_text(raw.input_port) or None, len=raw.len,
            family={4: "ipv4", 6: "ipv6"}.get(raw.family),
            proto=PROTO_NAMES.get(raw.l4proto, str(raw.l4proto)) if raw.family else None,
            saddr=saddr, daddr=daddr,
            sport=raw.sport if raw.l4_valid else None, dport=raw.dport if raw.l4_valid else None,
        )


# -- presenting ---------------------------------------------------------------

COLUMNS = (("TIME", 15), ("CPU", 3), ("DEVICE", 22), ("TRAP", 26), ("GROUP", 16),
           ("ACTION", 6), ("TYPE", 9), ("PORT", 10), ("PROTO", 5), ("SOURCE", 22),
           ("DESTINATION", 0))


def header() -> str:
    return " ".join(f"{n:<{w}}" if w else n for n, w in COLUMNS)


def _endpoint(addr: IPAddress | None, port: int | None) -> str:
    if addr is None:
        return "-"
    text = f"[{addr}]" if addr.version == 6 and port is not None else str(addr)
    return f"{text}:{port}" if port is not None else text


def hw_line(ev: HwDropEvent) -> str:
    """One aligned line for a hardware drop (columns as in :func:`header`)."""
    secs, ns = divmod(ev.time_ns, 1_000_000_000)
    cells = [time.strftime("%H:%M:%S", time.localtime(secs)) + f".{ns // 1000:06d}",
             str(ev.cpu), ev.device, ev.trap, ev.group, ev.action or "?", ev.trap_type,
             ev.input_port or "-", ev.proto or "-", _endpoint(ev.saddr, ev.sport),
             _endpoint(ev.daddr, ev.dport)]
    return " ".join(f"{c:<{w}}" if w else c for (_, w), c in zip(COLUMNS, cells, strict=True))


def hw_json(ev: HwDropEvent) -> str:
    return json.dumps(ev.to_json(), separators=(",", ":"))


class HwSink(Protocol):
    def watching(self, message: str) -> None: ...
    def drop(self, event: HwDropEvent) -> None: ...
    def summary(self, reports: int, lost: int) -> None: ...


class HwTextSink(LineSink):
    """Aligned text on ``out``; progress and the summary on ``err``."""

    def __init__(self, out: Any, err: Any) -> None:
        super().__init__(out, err)
        self._header_done = False

    def drop(self, event: HwDropEvent) -> None:
        if not self._header_done:
            print(header(), file=self.out)
            self._header_done = True
        print(hw_line(event), file=self.out, flush=True)

    def summary(self, reports: int, lost: int) -> None:
        print(f"kdbg: {reports} hardware drops reported, {lost} lost", file=self.err, flush=True)


class HwJsonSink(HwTextSink):
    """JSON lines on ``out``, each tagged with ``"type"``."""

    def drop(self, event: HwDropEvent) -> None:
        print(hw_json(event), file=self.out, flush=True)

    def summary(self, reports: int, lost: int) -> None:
        print(json.dumps({"type": "hw_summary", "reports": reports, "lost": lost},
                         separators=(",", ":")), file=self.out, flush=True)


# -- the program ----------------------------------------------------------------

def require_devices() -> list[str]:
    """The devlink devices, or NoDevlink saying why there are none (one line)."""
    if not devlink.has_devlink():
        raise NoDevlink("no devlink devices: this kernel has no devlink "
                        "(CONFIG_NET_DEVLINK), so no hardware drops to report")
    found = devlink.devices()
    if not found:
        raise NoDevlink("no devlink devices on this machine: no hardware drops to report")
    return found


def build(offsets: dict[str, int], *, stream: bool, ringbuf_pages: int = 64,
          stats_entries: int = 4096) -> str:
    """C text of the hardware-drop program, every placeholder filled."""
    return render(TEMPLATE.read_text(), {
        **offsets, "STREAM": int(stream), "RINGBUF_PAGES": ringbuf_pages,
        "STATS_ENTRIES": stats_entries,
    })


def kernel_offsets(btf_path: str | Path = "/sys/kernel/btf/vmlinux") -> dict[str, int]:
    """:data:`FIELDS` in the running kernel's BTF."""
    try:
        blob = Path(btf_path).read_bytes()
    except OSError as err:
        raise ProbeUnavailable(f"cannot read BTF at {btf_path}: {err.strerror}") from None
    return trace_offsets.compute(Btf(blob, source=str(btf_path)), FIELDS)


class HwProbe(RingProbe):
    """The hardware-drop program: per-CPU counts, and a ring buffer when streaming."""

    RECORD = RawHwEvent
    COUNTERS = {CTR_LOST: "lost", CTR_STATS_FULL: "stats_full"}
    LABEL = "hardware-drop program"

    def __init__(self, text: str) -> None:
        super().__init__(text, [(f"raw:{RAW_TRACEPOINT}", FUNC_NAME)])

    def hw_counts(self) -> dict[tuple[str, ...], int]:
        """Per-CPU counts summed, by (device, trap, group, input port)."""
        out: dict[tuple[str, ...], int] = {}
        for k, v in self._bpf["hw_stats"].items():
            key = (f"{_text(k.bus)}/{_text(k.device)}", _text(k.trap), _text(k.group),
                   _text(k.input_port))
            out[key] = out.get(key, 0) + sum(int(c) for c in v)
        return out

    def hw_lost(self) -> int:
        ctr = self.counters()
        return ctr["lost"] + ctr["stats_full"]


def counting_probe() -> HwProbe:
    """A started count-only probe (the exporter's), or NoDevlink."""
    require_devices()
    probe = HwProbe(build(kernel_offsets(), stream=False, ringbuf_pages=1))
    probe.start(lambda _raw: None)
    return probe


@dataclass(frozen=True)
class HwConfig:
    count: int | None = None
    duration: float | None = None


def prepare(cfg: HwConfig) -> str:
    """Check the kernel and the devices; the program text ``watch`` would load."""
    if cfg.count is not None and cfg.count <= 0:
        raise BadInput("--count must be positive")
    if cfg.duration is not None and cfg.duration <= 0:
        raise BadInput("--duration must be positive")
    check_privileges()
    require_devices()
    return build(kernel_offsets(), stream=True)


def watch(cfg: HwConfig, sink: HwSink) -> int:
    """Stream hardware drops until Ctrl-C/SIGTERM, ``count`` or ``duration``;
    return how many were reported."""
    text = prepare(cfg)
    probe = HwProbe(text)
    decoder = HwDecoder()
    delivered = 0

    def on_event(raw: RawHwEvent) -> None:
        nonlocal delivered
        if cfg.count is not None and delivered >= cfg.count:
            return
        sink.drop(decoder.decode(raw))
        delivered += 1

    stop = StopSignals.install()
    lost = 0
    try:
        probe.start(on_event)
        sink.watching(f"kdbg: watching {TRACEPOINT} on {', '.join(devlink.devices())}; "
                      "Ctrl-C to stop")
        start = time.monotonic()
        while not stop:
            probe.poll(100)
            if cfg.count is not None and delivered >= cfg.count:
                break
            if cfg.duration is not None and time.monotonic() - start >= cfg.duration:
                break
        if cfg.count is None or delivered < cfg.count:
            probe.consume()
        lost = probe.counters()["lost"]
    finally:
        stop.restore()
        probe.close()
    sink.summary(delivered, lost)
    return delivered
