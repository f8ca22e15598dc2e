"""The journey in a storm: while the ring buffer overflows, no new packet is followed
(its drop's record would find no room), so the hop programs would only cost every
packet their dispatch. The watch detaches them while the kernel counts more than
:data:`STORM_PER_S` drops a second instead of sending them, and attaches them again
once a look finds none counted; the journeys that overlap a pause say so.

Times are the kernel's monotonic clock (``bpf_ktime_get_ns``, Python's
``time.monotonic_ns``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from kdbg.trace.journey import ENTER_WINDOW_NS, RING_FULL, Journey

STORM_PER_S = 10_000  # drops a second counted instead of sent: a storm
PAUSED = ("not followed: the journey was paused in a storm (its hop programs detached "
          "while the ring buffer overflowed")


@dataclass
class Pauses:
    """When the hop programs were detached: ``(from, to)`` monotonic ns, ``to`` None
    while detached."""

    spans: list[tuple[int, int | None]] = field(default_factory=list)
    _counted: int = 0
    _looked_ns: int | None = None

    @property
    def paused(self) -> bool:
        return bool(self.spans) and self.spans[-1][1] is None

    def look(self, counted: int, now_ns: int) -> str | None:
        """A look at the drops counted so far instead of sent (the "more" total):
        "pause", "resume" or None, what the hop programs should do now."""
        new, self._counted = counted - self._counted, counted
        last, self._looked_ns = self._looked_ns, now_ns
        if last is None or now_ns <= last:
            return None
        rate = new * 1e9 / (now_ns - last)
        if not self.paused and rate > STORM_PER_S:
            self.spans.append((now_ns, None))
            return "pause"
        if self.paused and new == 0:
            self.spans[-1] = (self.spans[-1][0], now_ns)
            return "resume"
        return None

    def seconds(self, now_ns: int) -> float:
        """How long the hop programs were detached in all."""
        return sum(((end if end is not None else now_ns) - start)
                   for start, end in self.spans) / 1e9

    def mark(self, journey: Journey, first_hop_ns: int | None, drop_ns: int) -> Journey:
        """``journey`` (of a drop at ``drop_ns`` whose first hop came at
        ``first_hop_ns``) with what a pause took from it."""
        notes = list(journey.notes)
        for start, end in self.spans:
            stop = end if end is not None else drop_ns + 1
            span = f"from {start / 1e9:.3f} to {stop / 1e9:.3f} s of the kernel's clock)"
            if first_hop_ns is None:
                if start <= drop_ns <= stop and notes != [RING_FULL]:
                    notes = [f"{PAUSED} {span}"]
            elif first_hop_ns < start < drop_ns:
                notes.append("hops may be missing: the journey was paused in a storm while "
                             f"this packet crossed (its hop programs detached {span}")
            elif end is not None and 0 <= first_hop_ns - end < ENTER_WINDOW_NS:
                notes.append("it may have entered while the journey was paused in a storm: "
                             f"its first hop came {(first_hop_ns - end) / 1e6:.3f} ms after "
                             "its hop programs were attached again")
        if notes == list(journey.notes):
            return journey
        return dataclasses.replace(journey, notes=tuple(notes))
