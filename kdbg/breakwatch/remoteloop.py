"""The one loop over a remote tracer's items, with and without ``--break``.

The tracer runs in the target (a lab guest, or a machine behind ``--events-cmd``) and
its output arrives as items (:class:`~kdbg.breakwatch.sources.Item`) on an
:class:`~kdbg.breakwatch.sources.EventStream`. :func:`kdbg.breakwatch.remote.watch_remote`
(the drops shown here) and :class:`kdbg.breakwatch.watch.BreakWatch` (the arm/hit loop)
turn the same loop: Ctrl-C or SIGTERM, ``--duration`` and ``--count`` end it, and each
turn hands at most one item to the hook for its kind. They differ in what they do with
each kind and around each turn: the hooks of a :class:`RemoteLoop` subclass.
"""

from __future__ import annotations

import contextlib
import queue
import time
from typing import Any

from kdbg.breakwatch.sources import EventStream, Item
from kdbg.drops.watch import WatchConfig
from kdbg.signals import StopSignals
from kdbg.trace.event import DropEvent

WAIT = 0.2  # s a turn waits for an item


class RemoteLoop:
    """One run over a remote tracer's items. Subclasses override the hooks they need;
    each turn of :meth:`run` calls them in the order listed."""

    def __init__(self, watch: WatchConfig) -> None:
        self.count = watch.count
        self.deadline = time.monotonic() + watch.duration if watch.duration else None
        self.drops = 0
        self.arrived = 0.0  # when the item being handled arrived (monotonic; 0.0: unknown)

    def before(self) -> bool:
        """Work at the start of a turn; False ends the loop."""
        return True

    def counted(self) -> bool:
        """Whether ``--count`` ends the loop now: that many drops were seen."""
        return self.count is not None and self.drops >= self.count

    def wait(self) -> float:
        """How long this turn waits for an item (s)."""
        return WAIT

    def on_drop(self, event: DropEvent) -> None:
        """A drop (already counted in ``drops``)."""

    def on_record(self, record: dict[str, Any]) -> None:
        """Any other JSON line of the tracer (its summary, a stats table...)."""

    def on_text(self, item: Item) -> None:
        """A line the tracer wrote on stderr (``stderr``, or ``ready``: its first
        'kdbg: watching' line); blank ones are left out."""

    def on_end(self, status: int | None) -> bool:
        """The tracer ended with exit ``status``; False (the default) ends the loop."""
        return False

    def after(self) -> bool:
        """Work at the end of a turn, after its item; False ends the loop."""
        return True

    def handle(self, item: Item) -> bool:
        """Hand ``item`` to the hook for its kind; False when that ends the loop."""
        self.arrived = item.at
        if item.kind == "drop" and item.drop is not None:
            self.drops += 1
            self.on_drop(item.drop)
        elif item.kind == "record" and item.record is not None:
            self.on_record(item.record)
        elif item.kind in ("ready", "stderr") and item.text.strip():
            self.on_text(item)
        elif item.kind == "end":
            return self.on_end(item.status)
        return True

    def turn(self, stream: EventStream) -> bool:
        """One turn: :meth:`before`, the deadline, the count, one item within
        :meth:`wait` s, :meth:`after`. False when the loop is done."""
        if not self.before():
            return False
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        if self.counted():
            return False
        with contextlib.suppress(queue.Empty):
            if not self.handle(stream.items.get(timeout=self.wait())):
                return False
        return self.after()

    def read(self, stream: EventStream, signals: StopSignals) -> None:
        """Turn until Ctrl-C or SIGTERM (``signals``) or a turn says it is done."""
        while not signals and self.turn(stream):
            pass
