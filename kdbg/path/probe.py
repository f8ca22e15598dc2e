"""Load the path program with bcc and attach it to every tracepoint it names."""

from __future__ import annotations

import ctypes as ct
from collections.abc import Callable
from typing import Any

from kdbg.trace.probe import load_bpf

from . import layout


class PathProbe:
    """The loaded program: ring buffer, tracking map and counters."""

    def __init__(self, text: str, attachments: list[tuple[str, str]]) -> None:
        self.text = text
        self.attachments = attachments
        self._bpf: Any = None

    def start(self, on_event: Callable[[layout.RawPathEvent], None]) -> None:
        """Compile, load and attach; ``on_event`` gets each raw record during :meth:`poll`."""
        self._bpf = load_bpf(self.text, self.attachments, "path program")

        def callback(_ctx: Any, data: Any, _size: int) -> None:
            on_event(ct.cast(data, ct.POINTER(layout.RawPathEvent)).contents)

        self._bpf["events"].open_ring_buffer(callback)

    @property
    def loaded(self) -> bool:
        return self._bpf is not None

    def poll(self, timeout_ms: int) -> None:
        """Deliver pending events (at most ``timeout_ms`` of waiting)."""
        self._bpf.ring_buffer_poll(timeout_ms)

    def consume(self) -> None:
        """Deliver whatever is pending without waiting."""
        self._bpf.ring_buffer_consume()

    def counters(self) -> dict[str, int]:
        """Per-CPU counters, summed: lost, track_full, packets, ends."""
        table = self._bpf["counters"]
        names = {layout.CTR_LOST: "lost", layout.CTR_TRACK_FULL: "track_full",
                 layout.CTR_PACKETS: "packets", layout.CTR_ENDS: "ends"}
        return {name: sum(int(v) for v in table[ct.c_int(slot)]) for slot, name in names.items()}

    def close(self) -> None:
        """Detach and free everything (idempotent)."""
        if self._bpf is not None:
            bpf, self._bpf = self._bpf, None
            bpf.cleanup()
