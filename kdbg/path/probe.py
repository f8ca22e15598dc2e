"""The path program, loaded with bcc and attached to every tracepoint it names."""

from __future__ import annotations

from kdbg.trace.probe import RingProbe

from . import layout


class PathProbe(RingProbe):
    """The loaded program: ring buffer, tracking map and counters (lost, track_full,
    packets, ends)."""

    RECORD = layout.RawPathEvent
    COUNTERS = {layout.CTR_LOST: "lost", layout.CTR_TRACK_FULL: "track_full",
                layout.CTR_PACKETS: "packets", layout.CTR_ENDS: "ends"}
    LABEL = "path program"
