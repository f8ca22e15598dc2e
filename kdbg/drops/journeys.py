"""``kdbg watch --journey``: the drop program follows the packets the filters match from
hop to hop (:mod:`kdbg.trace.journeyprog`), and each drop's record carries its packet's
journey, which this turns into the event's :class:`~kdbg.trace.journey.Journey`."""

from __future__ import annotations

import dataclasses
import struct
import time
from typing import Any

from kdbg.errors import BadInput
from kdbg.trace import journeylayout as jl
from kdbg.trace import journeyprog
from kdbg.trace.event import DropEvent
from kdbg.trace.filters import FilterSpec
from kdbg.trace.journey import from_record
from kdbg.trace.journeypause import Pauses
from kdbg.trace.nsnames import NetnsNames
from kdbg.trace.probe import DropProbe, per_cpu_u64


class JourneyDropProbe(DropProbe):
    """The drop program with the journey's hop programs: its records are
    ``struct kdbg_journey_drop``."""

    RECORD: Any = jl.RawJourneyDrop
    LABEL = "drop program (with journeys)"

    def __init__(self, text: str, hops: list[tuple[str, str]]) -> None:
        super().__init__(text)
        # the drop program first, then consume_skb and the hops
        # (:func:`kdbg.trace.journeyprog.attachments`): every journey begun can end
        self.attachments = self.attachments + hops
        # what a storm detaches: the hop programs, not consume_skb (a followed packet's
        # end must still be seen)
        self.hop_fns = [fn for tp, fn in hops if (tp, fn) != journeyprog.CONSUME]

    def pause_hops(self) -> None:
        """Detach the hop programs (:mod:`kdbg.trace.journeypause`)."""
        self.obj.pause(self.hop_fns)

    def resume_hops(self) -> None:
        """Attach the hop programs again."""
        self.obj.resume(self.hop_fns)

    def journey_counters(self) -> dict[str, int]:
        """Packets followed, and those not followed because their slot was busy."""
        out = {}
        for slot, name in ((jl.CTR_FOLLOWED, "followed"), (jl.CTR_BUSY, "busy")):
            value = self.lookup("journey_counters", struct.pack("<I", slot))
            out[name] = sum(per_cpu_u64(value)) if value is not None else 0
        return out


class Journeys:
    """The journey side of one watch: the program's fragment for ``spec``'s packet
    filters, and each drop's journey from its record."""

    def __init__(self, spec: FilterSpec, slots: int = 1024) -> None:
        if slots < 2 or slots & (slots - 1):
            raise BadInput("the journey table's slots must be a power of two, at least 2")
        opts = journeyprog.JourneyOptions(slot_bits=slots.bit_length() - 1)
        self.text, self.hops = journeyprog.for_running_kernel(spec, opts)
        self.names = NetnsNames()
        self.attached_ns: int | None = None
        self.wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self.pauses = Pauses()

    def program_options(self) -> dict[str, Any]:
        """The drop program's options that carry the journey."""
        return {"journey": self.text, "output": journeyprog.OUTPUT}

    def probe(self, text: str) -> JourneyDropProbe:
        return JourneyDropProbe(text, self.hops)

    def attached(self) -> None:
        """The programs are attached: journeys that begin this soon may have begun
        before (:data:`kdbg.trace.journey.ENTER_WINDOW_NS`)."""
        self.attached_ns = time.monotonic_ns()

    def add(self, event: DropEvent, raw: jl.RawJourneyDrop) -> DropEvent:
        """``event`` with the journey its record carries."""
        journey = from_record(raw, self.wall_offset_ns, self.attached_ns, self.names.name)
        if self.pauses.spans:
            first = (journey.hops[0].time_ns - self.wall_offset_ns) if journey.hops else None
            journey = self.pauses.mark(journey, first, raw.ev.time_ns)
        return dataclasses.replace(event, journey=journey)

    def storm(self, probe: JourneyDropProbe, counted: int) -> None:
        """A look at the drops counted so far instead of sent: detach the hop programs
        in a storm, attach them again after it (:mod:`kdbg.trace.journeypause`)."""
        what = self.pauses.look(counted, time.monotonic_ns())
        if what == "pause":
            probe.pause_hops()
        elif what == "resume":
            probe.resume_hops()

    def summary(self, probe: JourneyDropProbe) -> str:
        """The line said at the end: packets followed, and not followed (table full)."""
        ctr = probe.journey_counters()
        text = f"kdbg: journeys: {ctr['followed']} packets followed"
        if ctr["busy"]:
            text += f", {ctr['busy']} not followed (their slot of the table was busy)"
        if self.pauses.spans:
            n = len(self.pauses.spans)
            text += (f"; paused {n} time{'s' if n > 1 else ''} in a storm "
                     f"({self.pauses.seconds(time.monotonic_ns()):.1f} s in all)")
        return text
