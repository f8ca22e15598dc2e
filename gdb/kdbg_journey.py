"""``kdbg-journey [EXPR]``: the stopped skb's journey (loaded by kdbg_prompt.py): the
hops it crossed before its drop, read from the slot of the journey table that kdbg's
tracer keeps in the target (kdbg's state says where the table is). The text is
:mod:`kdbg.prompt.journeyview`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import kdbg_state  # type: ignore[import-not-found]

import gdb  # type: ignore[import-not-found]
from kdbg.errors import BadInput
from kdbg.prompt import journeyview


def _skb(arg: str) -> int:
    """The skb's address: EXPR, else $kdbg_skb, else the state's stopped skb."""
    try:
        if arg:
            return int(gdb.parse_and_eval(arg)) & 0xFFFFFFFFFFFFFFFF
        conv = gdb.convenience_variable("kdbg_skb")
        if conv is not None:
            return int(conv) & 0xFFFFFFFFFFFFFFFF
    except gdb.error as err:
        raise gdb.GdbError(f"kdbg-journey: {err}") from err
    state = kdbg_state.current()
    if state is None or state.stop is None or state.stop.skb is None:
        raise gdb.GdbError("kdbg-journey: no stopped skb is known: give one (kdbg-journey EXPR)")
    return int(state.stop.skb)


class _JourneyCommand(gdb.Command):  # type: ignore[misc]
    """kdbg-journey [EXPR]: the stopped skb's journey: each hop before its drop, what changed.

Read from the journey table kdbg's tracer keeps in the target (watch --break). EXPR is
the skb (default: $kdbg_skb). --record FILE also writes what was read, as JSON.
"""

    def __init__(self) -> None:
        super().__init__("kdbg-journey", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    def invoke(self, arg: str, from_tty: bool) -> None:
        record, arg = kdbg_state.record_option(arg, "kdbg-journey [--record FILE] [EXPR]")
        state = kdbg_state.require("kdbg-journey")
        try:
            table = journeyview.table_of(state)
        except BadInput as err:
            raise gdb.GdbError(f"kdbg-journey: {err}") from err
        skb = _skb(arg)
        address = table.slot_address(skb)
        try:
            data = bytes(gdb.selected_inferior().read_memory(address, table.slot_size))
        except (gdb.error, gdb.MemoryError) as err:
            raise gdb.GdbError(f"kdbg-journey: cannot read the journey table at "
                               f"0x{address:x}: {err}") from err
        gdb.write("\n".join(journeyview.describe(data, skb, state)) + "\n")
        if record:
            rec = journeyview.recording(data, skb, state)
            Path(record).write_text(json.dumps(rec, indent=1) + "\n")
            gdb.write(f"kdbg-journey: recorded in {record}\n")


_JourneyCommand()
