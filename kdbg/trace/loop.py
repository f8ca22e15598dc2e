"""The one attach/poll/drain loop every tracer runs (``watch``, ``path``, recording).

A tracer says how to attach, take what is pending, settle and drain; the loop owns
the stop conditions they share: the tracer's own (``done``: a count reached),
``duration`` seconds, the ``cmd`` workload exiting, and Ctrl-C or SIGTERM, which set
a flag (an exception raised in bcc's ctypes callback would be swallowed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kdbg.errors import BadInput
from kdbg.signals import StopSignals
from kdbg.trace.probe import RingProbe
from kdbg.trace.workload import Workload

POLL_MS = 100  # one wait for events
SETTLE_POLLS = 3  # after the workload exits: let the drops of its last moments arrive
SETTLE_MS = 50
QUIESCE_S = 0.01  # between two reads of the counters that must agree after detaching


class Loop:
    """One run of a tracer. Subclasses override what they need; each hook runs once
    per turn of :func:`run`, in the order listed."""

    def attach(self) -> None:
        """Load and attach the program; say so (the 'kdbg: watching' line)."""

    def step(self) -> None:
        """Take what is pending (waits up to ``POLL_MS``)."""

    def tick(self, elapsed: float) -> None:
        """Periodic work, ``elapsed`` seconds after attaching."""

    def done(self) -> bool:
        """The tracer's own stop condition (a count reached)."""
        return False

    def settle(self) -> None:
        """The workload exited: take the events of its last moments."""

    def idle(self) -> None:
        """Between turns (a tracer whose :meth:`step` does not wait sleeps here)."""

    def drain(self) -> None:
        """Stopped: take the rest and read the final counts while still loaded."""

    def close(self) -> None:
        """Detach and free everything, also after errors."""


class RingLoop(Loop):
    """A loop over a :class:`~kdbg.trace.probe.RingProbe`: events arrive through
    ``on_event`` while it polls; ``ended`` (set by ``on_event`` at a count) stops it."""

    def __init__(self, probe: RingProbe) -> None:
        self.probe = probe
        self.ended = False

    def on_event(self, raw: Any) -> None:
        """One raw record, during a poll."""

    def attach(self) -> None:
        self.probe.start(self.on_event)

    def step(self) -> None:
        self.probe.poll(POLL_MS)

    def done(self) -> bool:
        return self.ended

    def settle(self) -> None:
        for _ in range(SETTLE_POLLS):
            self.probe.poll(SETTLE_MS)

    def drain(self) -> None:
        if self.probe.loaded:
            self.probe.detach()
            quiesce(self.probe)
            if not self.ended:
                while self.probe.consume():
                    pass
            self.final()

    def final(self) -> None:
        """Read the final counts (the probe is loaded and drained)."""

    def close(self) -> None:
        self.probe.close()


def quiesce(probe: RingProbe, timeout: float = 1.0) -> None:
    """After detaching: wait until the program's counters stop moving, so a run still
    under way on another CPU has written what it was writing before they are read."""
    deadline = time.monotonic() + timeout
    before = probe.counters()
    while time.monotonic() < deadline:
        time.sleep(QUIESCE_S)
        now = probe.counters()
        if now == before:
            return
        before = now


def check_limits(count: int | None, duration: float | None) -> None:
    """BadInput for a ``--count`` or ``--duration`` that is not positive."""
    if count is not None and count <= 0:
        raise BadInput("--count must be positive")
    if duration is not None and duration <= 0:
        raise BadInput("--duration must be positive")


def check_pages(pages: int) -> None:
    """BadInput unless ``--buffer-pages`` is a power of two."""
    if pages <= 0 or pages & (pages - 1):
        raise BadInput("--buffer-pages must be a power of two")


@dataclass(frozen=True)
class LoopEnd:
    cmd_status: int | None  # the workload's exit status, None without one or if we ended it
    interrupted: bool  # Ctrl-C or SIGTERM


def run(loop: Loop, *, cmd: str | None, duration: float | None) -> LoopEnd:
    """Attach, turn until a stop condition, end the workload, drain, detach."""
    stop = StopSignals.install()
    workload = Workload(cmd)
    try:
        loop.attach()
        start = time.monotonic()
        workload.start()
        while not loop.done() and not stop:
            loop.step()
            elapsed = time.monotonic() - start
            loop.tick(elapsed)
            if loop.done() or (duration is not None and elapsed >= duration):
                break
            if workload.exited():
                loop.settle()
                break
            loop.idle()
    finally:
        interrupted = bool(stop)
        stop.restore()
        status = workload.finish()
        try:
            loop.drain()
        finally:
            loop.close()
    return LoopEnd(status, interrupted)
