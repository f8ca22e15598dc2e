"""Presenting ``kdbg watch --break``: text for people, JSON lines for programs.

Records: ``drop`` (as kdbg watch), ``armed``, ``refused``, ``hit`` (at the stop, from
gdb), ``hit_record`` (the tracer's record of the stopped skb, once it comes: its cause
and kernel stack), ``stats`` and ``summary`` from the remote tracer, and ``cleanup``
last.
"""

from __future__ import annotations

import json
from typing import Any

from kdbg.breakwatch.model import Hit
from kdbg.debugger.model import Breakpoint, CleanupReport, DropSite
from kdbg.debugger.run import render_stop
from kdbg.drops import drop_json, drop_line, header, journey_block, more_line, stack_lines
from kdbg.guard import Decision
from kdbg.guard import render as render_decision
from kdbg.trace.event import DropEvent
from kdbg.trace.journeytext import journey_lines
from kdbg.trace.more import Summarized


def _emit(stream: Any, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


class BreakTextSink:
    """Drops as aligned lines; arming, refusals and hits as short blocks."""

    def __init__(self, out: Any, err: Any, *, stacks: bool = False) -> None:
        self.out, self.err = out, err
        self.stacks = stacks  # print each drop's stack (the tracer captures them anyway)
        self._header = False

    def progress(self, message: str) -> None:
        _emit(self.err, f"kdbg: {message}")

    def drop(self, event: DropEvent) -> None:
        if not self._header:
            _emit(self.out, header())
            self._header = True
        _emit(self.out, drop_line(event))
        for line in (stack_lines(event) if self.stacks else []) + journey_block(event):
            _emit(self.out, line)

    def armed(self, site: DropSite, bp: Breakpoint, event: DropEvent, seconds: float) -> None:
        if event.prog is not None:
            _emit(self.out, f"armed in program {event.prog.id} ({event.prog.name}) at "
                            f"{site.caller} (0x{site.call_addr:x}), {site.instruction}: "
                            f"breakpoint {bp.number}, for its {event.reason} ({seconds:.2f} s "
                            "after the drop event arrived)")
            return
        _emit(self.out, f"armed at {site.caller} (0x{site.call_addr:x}), the call to "
                        f"{site.callee}: breakpoint {bp.number}, for drops at {event.location} "
                        f"({seconds:.2f} s after the drop event arrived)")

    def refused(self, decision: Decision, event: DropEvent) -> None:
        _emit(self.out, f"refused to break at {event.location}; still watching")
        _emit(self.out, "  " + render_decision(decision).replace("\n", "\n  "))

    def hit(self, hit: Hit) -> None:
        stop = hit.stop
        lines = render_stop(stop).splitlines()
        _emit(self.out, f"[{hit.number}] {lines[0]}")
        if stop.file:
            _emit(self.out, f"    at {stop.file}:{stop.line}")
        if hit.skb is not None:
            _emit(self.out, f"    {hit.skb.summary()}")
        if hit.reason is not None:
            _emit(self.out, f"    reason: {hit.reason}")
        if hit.cause is not None:
            _emit(self.out, f"    cause: {hit.cause.text}")
        if hit.verdict is not None:
            _emit(self.out, f"    verdict once resumed: {drop_line(hit.verdict).strip()}")
        if hit.journey is not None:
            for line in journey_lines(hit.journey):
                _emit(self.out, f"    {line}")
        _emit(self.out, "    backtrace (gdb, trusted frames only):")
        for line in lines[1:]:
            _emit(self.out, f"      {line}")
        self._stack(hit)

    def confirmed(self, hit: Hit) -> None:
        if hit.record_skb is None:
            _emit(self.out, f"[{hit.number}] the tracer's record of this skb: none")
        else:
            differ = hit.differences
            _emit(self.out, f"[{hit.number}] the tracer's record of this skb: "
                            + (f"differs: {'; '.join(differ)}" if differ
                               else "agrees with gdb's read"))
        if hit.cause is not None:  # (its journey is on the drop's own line, just above)
            _emit(self.out, f"    cause: {hit.cause.text}")
        self._stack(hit)

    def _stack(self, hit: Hit) -> None:
        if hit.kernel_stack:
            label = hit.stack_note or "the stopped skb's stack, captured in the kernel (ORC)"
            _emit(self.out, f"    kernel stack ({label}):")
            for i, frame in enumerate(hit.kernel_stack):
                _emit(self.out, f"      #{i:<2} {frame}")
        elif hit.stack_note:
            _emit(self.out, f"    kernel stack: none ({hit.stack_note})")

    def record(self, record: dict[str, object]) -> None:
        if record.get("type") == "modules":
            what = []
            for key in ("loaded", "unloaded"):
                names = record.get(key)
                if isinstance(names, list) and names:
                    what.append(f"{key} {', '.join(map(str, names))}")
            text = "; ".join(what)
            gone = record.get("removed_breakpoint")
            if isinstance(gone, dict):
                text += (f"; breakpoint {gone['number']} at {gone['label']} went with its "
                         f"module and was deleted")
            _emit(self.err, f"kdbg: the target's modules changed: {text}")
        if record.get("type") == "more":
            _emit(self.out, more_line(Summarized.from_json(record)))
        if record.get("type") == "summary":
            _emit(self.err, f"kdbg: the target's tracer: {record.get('matched')} drops "
                            f"matched, {record.get('summarized', 0)} summarized, "
                            f"{record.get('lost')} lost")

    def cleanup(self, report: CleanupReport) -> None:
        _emit(self.err, f"kdbg: {report.message()}")


class BreakJsonSink:
    """JSON lines, each tagged with ``"type"``."""

    def __init__(self, out: Any, err: Any) -> None:
        self.out, self.err = out, err

    def _json(self, rec: dict[str, Any]) -> None:
        _emit(self.out, json.dumps(rec, separators=(",", ":")))

    def progress(self, message: str) -> None:
        _emit(self.err, f"kdbg: {message}")

    def drop(self, event: DropEvent) -> None:
        _emit(self.out, drop_json(event))

    def armed(self, site: DropSite, bp: Breakpoint, event: DropEvent, seconds: float) -> None:
        self._json({"type": "armed", "breakpoint": bp.number, "location": event.location,
                    "event_to_armed_s": round(seconds, 4),
                    **site.to_json(),
                    **({"prog": event.prog.to_json()} if event.prog is not None else {}),
                    "guard": bp.decision.to_json() if bp.decision is not None else None})

    def refused(self, decision: Decision, event: DropEvent) -> None:
        self._json({"type": "refused", "location": event.location, **decision.to_json()})

    def hit(self, hit: Hit) -> None:
        rec = hit.stop.to_json()
        rec["number"] = hit.number
        if hit.skb is not None:
            rec["skb"] = hit.skb.to_json()
        if hit.reason is not None:
            rec["drop_reason"] = hit.reason  # ("reason" is the stop's: breakpoint-hit)
        self._json(rec | self._tracer_part(hit))

    def confirmed(self, hit: Hit) -> None:
        rec: dict[str, Any] = {"type": "hit_record", "number": hit.number,
                               "found": hit.record_skb is not None}
        if hit.record_skb is not None:
            rec["skb"] = hit.record_skb.to_json()
            rec["differences"] = hit.differences
        self._json(rec | self._tracer_part(hit))

    @staticmethod
    def _tracer_part(hit: Hit) -> dict[str, Any]:
        """What the tracer's record adds to a hit (at the stop: the journey gdb read and,
        at ``--interactive``, the arming drop's stack)."""
        rec: dict[str, Any] = {}
        if hit.kernel_stack is not None:
            rec["kernel_stack"] = list(hit.kernel_stack)
        if hit.stack_note is not None:
            rec["kernel_stack_note"] = hit.stack_note
        if hit.cause is not None:
            rec["cause"] = hit.cause.to_json()
        if hit.verdict is not None:
            rec["verdict"] = hit.verdict.to_json()
        if hit.journey is not None:
            rec.update(hit.journey.to_json())
        return rec

    def record(self, record: dict[str, object]) -> None:
        self._json(dict(record))

    def cleanup(self, report: CleanupReport) -> None:
        self._json({"type": "cleanup", "ok": report.ok, "target": report.target_state,
                    "problems": report.problems})
