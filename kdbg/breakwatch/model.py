"""What ``kdbg watch --break`` is told and what it says: its settings, the sink its
reports go to, one stop at the drop site, and the outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kdbg.debugger.model import Breakpoint, CleanupReport, DropSite, Stop
from kdbg.debugger.skb import SkbInfo
from kdbg.guard import Decision
from kdbg.trace.cause import Cause
from kdbg.trace.event import DropEvent
from kdbg.trace.journey import Journey

HIT_STACK_WAIT = 30.0  # seconds to wait for the stopped skb's drop event after resuming
# ... and the longest, while the tracer is still delivering drops from before the stop
# (a lab guest's tracer, cold or under load, can be tens of seconds behind)
HIT_BEHIND_WAIT = 300.0
# A journey's times and a drop's are wall clock from two reads of the offset to the
# kernel's clock, microseconds apart: closer than this, neither is known to be first.
CLOCKS_APART_NS = 10_000_000


@dataclass(frozen=True)
class BreakConfig:
    """Where the tracer and the debugger reach the target, and how to break."""

    lab: str | None = None
    events_cmd: str | None = None
    gdb: str | None = None
    vmlinux: str | None = None
    kallsyms: str | None = None
    source: str | None = None  # the kernel's tree, for a target given with --gdb
    want_source: bool = True  # a lab kernel's own source and gdb scripts at the stop
    transport: str | None = None
    interactive: bool = False
    force: bool = False
    hw_break: bool = False
    break_count: int = 1


@dataclass
class Hit:
    """One stop at the drop site. ``kernel_stack`` is the stopped skb's stack as the
    tracer captured it in the kernel (ORC-unwound, so right past module frames where
    gdb without CFI stops), matched by skb address once the target resumed."""

    number: int
    stop: Stop
    skb: SkbInfo | None
    kernel_stack: tuple[str, ...] | None = None
    stack_note: str | None = None
    cause: Cause | None = None  # the stopped skb's drop cause, from the tracer
    journey: Journey | None = None  # its hops: read at the stop, then the tracer's record
    verdict: DropEvent | None = None  # in a BPF program: the verdict record that followed
    deadline: float = 0.0
    stopped_at: float = 0.0  # time.monotonic() when kdbg read gdb's report of the stop
    resumed_at: float = 0.0  # time.monotonic() when the target was let run again
    reason: str | None = None  # the drop reason passed to the call, read by gdb
    record_skb: SkbInfo | None = None  # the tracer's read of the skb, when it came
    reported_at: float = 0.0  # time.monotonic() when the hit was printed (at the stop)
    confirmed_at: float = 0.0  # ... and when the tracer's record of its skb came

    def before_packet(self, ev: DropEvent) -> bool:
        """Whether ``ev`` is a drop from before the stopped packet's last hop (the
        journey read at the stop): the tracer has not reached this stop's drop yet.
        False without a journey."""
        hops = self.journey.hops if self.journey is not None else ()
        return bool(hops) and ev.time_ns < hops[-1].time_ns - CLOCKS_APART_NS

    @property
    def differences(self) -> list[str]:
        """Where gdb's read of the skb at the stop and the tracer's at the drop differ."""
        if self.skb is None or self.record_skb is None:
            return []
        return self.skb.differences(self.record_skb)


class BreakSink(Protocol):
    """Where a break-watch reports to (text or JSON lines)."""

    def progress(self, message: str) -> None: ...
    def drop(self, event: DropEvent) -> None: ...
    def armed(self, site: DropSite, bp: Breakpoint, event: DropEvent,
              seconds: float) -> None: ...
    def refused(self, decision: Decision, event: DropEvent) -> None: ...
    def hit(self, hit: Hit) -> None: ...
    def confirmed(self, hit: Hit) -> None: ...
    def record(self, record: dict[str, object]) -> None: ...
    def cleanup(self, report: CleanupReport) -> None: ...


@dataclass(frozen=True)
class BreakOutcome:
    drops: int
    hits: int
    refused: tuple[Decision, ...]
    armed: bool
    cleanup: CleanupReport | None
    interrupted: bool

    @property
    def exit_status(self) -> int:
        """0: stopped as asked; 3: the guard refused and nothing stopped; 4: no stop."""
        if self.hits:
            return 0
        if self.refused:
            return 3
        return 0 if self.interrupted else 4


def connect_cleanup(err: BaseException) -> CleanupReport:
    """The cleanup record of a break-watch interrupted while connecting: what the
    session's abandon did (:meth:`Session.connect` hangs it on the exception), or,
    before gdb started, that the target was never touched."""
    report = getattr(err, "kdbg_cleanup", None)
    if isinstance(report, CleanupReport):
        return report
    return CleanupReport(target_state="running, untouched (interrupted before gdb attached)",
                         steps=["interrupted while connecting"])
