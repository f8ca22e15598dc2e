"""Presenting hardware drops: aligned text lines and JSON lines."""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from kdbg.hwdrops.event import HwDropEvent
from kdbg.trace.headers import IPAddress
from kdbg.trace.lines import LineSink

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
