"""The stopped packet's journey in ``watch --break``: the tracer in the target follows
the packets the filters match (``kdbg watch --journey``) and each drop record it sends
carries its packet's hops and where the kernel keeps them. At a stop the stopped skb has
not been dropped yet, so its hops are still in the kernel's table: kdbg reads its slot
through gdb (the hit report; in the tracer's record too once the target resumes, with
the times before the drop) and tells the prompt's ``kdbg-journey`` where the table is."""

from __future__ import annotations

from typing import Any

from kdbg.debugger.errors import GdbCancelled, TargetLost
from kdbg.debugger.inspection import Inspection
from kdbg.errors import GdbError
from kdbg.trace.event import DropEvent
from kdbg.trace.journey import Journey, JourneyTable, from_slot


class StopJourneys:
    """What the tracer's drop records said of its journeys: the table, and the names of
    the namespaces their hops crossed (the prompt's gdb runs where those are not)."""

    def __init__(self) -> None:
        self.table: JourneyTable | None = None
        self.names: dict[int, str] = {}

    def seen(self, ev: DropEvent) -> None:
        """Learn from a drop the tracer sent."""
        journey = ev.journey
        if journey is None:
            return
        if journey.table is not None:
            self.table = journey.table
        self.names.update({h.netns: h.netns_name for h in journey.hops
                           if h.netns is not None and h.netns_name is not None})

    def name(self, inode: int | None) -> str | None:
        """The name of namespace ``inode`` in the target, when a drop record gave one."""
        return self.names.get(inode) if inode is not None else None

    def read(self, inspect: Inspection, skb: int) -> Journey | None:
        """The journey of the skb stopped at ``skb``, read from the target's memory;
        None before any drop said where the table is."""
        table = self.table
        if table is None:
            return None
        try:
            data = inspect.read_memory(table.slot_address(skb), table.slot_size)
            return from_slot(data, skb, table, self.name)
        except (GdbCancelled, TargetLost):
            raise  # Ctrl-C, or nothing left to read: the watch ends
        except (GdbError, ValueError) as err:
            return Journey((), (f"its slot of the journey table could not be read: {err}",),
                           table)

    def facts(self) -> dict[str, Any]:
        """What the prompt's state file says of journeys (:mod:`kdbg.prompt.state`)."""
        if self.table is None:
            return {}
        return {"journey_table": self.table.to_json(),
                "netns_names": {str(k): v for k, v in sorted(self.names.items())}}
