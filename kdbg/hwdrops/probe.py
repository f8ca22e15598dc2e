"""Hardware drops: the devlink-trap program, its probe, and ``kdbg watch --hw``.

Counts are kept per CPU in the kernel as for software drops; ``kdbg watch --hw``
also streams each report, and the exporter reads the counts
(:func:`counting_probe`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kdbg.dirs import BPF_DIR
from kdbg.errors import BadInput, ProbeUnavailable
from kdbg.hwdrops import devlink
from kdbg.hwdrops.event import CTR_LOST, CTR_STATS_FULL, HwDecoder, RawHwEvent, RawHwKey, c_text
from kdbg.hwdrops.output import HwSink
from kdbg.signals import StopSignals
from kdbg.symbols.btf import Btf
from kdbg.trace import offsets as trace_offsets
from kdbg.trace.probe import RingProbe, check_privileges, per_cpu_u64
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


class NoDevlink(ProbeUnavailable):
    """No devlink device to report hardware drops from."""



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
        for raw, value in self.items("hw_stats"):
            k = RawHwKey.from_buffer_copy(raw)
            key = (f"{c_text(k.bus)}/{c_text(k.device)}", c_text(k.trap), c_text(k.group),
                   c_text(k.input_port))
            out[key] = out.get(key, 0) + sum(per_cpu_u64(value))
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
