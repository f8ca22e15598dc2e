"""What gdb's ``kdbg-journey`` prints: the stopped skb's journey, from its slot of the
journey table that kdbg's tracer keeps in the target (bpf/kdbg_journey.h), as gdb read
it. Pure, so it is tested on a slot recorded at a real stop (``tests/data/prompt/``);
``kdbg-journey --record FILE`` writes such a recording (:func:`recording`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kdbg.errors import BadInput
from kdbg.prompt.state import PromptState
from kdbg.trace import journeylayout as jl
from kdbg.trace.journey import JourneyTable, from_slot
from kdbg.trace.journeytext import journey_lines

NO_TABLE = ("kdbg's state names no journey table: the tracer in the target ran without its "
            "journey (watch --break --no-journey), or reported no drop before the stop")


def table_of(state: PromptState) -> JourneyTable:
    """The journey table kdbg's state names; BadInput in one line when there is none."""
    if state.journey_table is None:
        raise BadInput(NO_TABLE)
    return state.journey_table


def describe(data: bytes, skb: int, state: PromptState) -> list[str]:
    """The lines for the skb at ``skb``, whose slot holds ``data``."""
    table = table_of(state)
    journey = from_slot(data, skb, table, state.netns_name)
    slot = jl.slot_of(skb, table.slots)
    title = (f"skb 0x{skb:x}: its journey, from slot {slot} of the tracer's journey table "
             f"(0x{table.slot_address(skb):x})")
    return [title, *journey_lines(journey)]


def recording(data: bytes, skb: int, state: PromptState) -> dict[str, Any]:
    """What ``--record`` writes: the skb, its slot's bytes, and the state's table and
    namespace names, from which :func:`replay` gives the same lines."""
    table = table_of(state)
    return {"skb": f"0x{skb:x}", "slot": data.hex(), "journey_table": table.to_json(),
            "netns_names": {str(k): v for k, v in state.netns_names.items()}}


def replay(rec: Mapping[str, Any]) -> list[str]:
    """The lines :func:`describe` printed when ``rec`` was recorded."""
    state = PromptState(journey_table=JourneyTable.from_json(rec["journey_table"]),
                        netns_names={int(k): v for k, v in rec["netns_names"].items()})
    return describe(bytes.fromhex(rec["slot"]), int(rec["skb"], 16), state)
