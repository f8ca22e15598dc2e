"""The watch's learned call chains (:mod:`kdbg.trace.chains`): a stack the drop program
sent becomes a chain in its ``chains`` map, and a drop carries the symbols of the frames
its cause reads, from its chain or its own stack.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from kdbg.causes import stack_depth
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.trace import chains, layout
from kdbg.trace.event import from_drop
from kdbg.trace.probe import DropProbe

_U64 = struct.Struct("<Q")


class Learner:
    """Chains learned during one watch, and the names of the frames they hold."""

    def __init__(self, probe: DropProbe, reasons: Callable[[int], str],
                 kallsyms: Callable[[], Kallsyms]) -> None:
        self.probe, self.reason_name, self.kallsyms = probe, reasons, kallsyms
        self.book = chains.ChainBook()
        self.names: dict[int, str | None] = {}
        self.hits = 0  # drops whose frames came from a chain

    def name(self, addresses: Sequence[int]) -> list[str | None]:
        """The symbols of ``addresses`` (each looked up once per watch)."""
        out = []
        for addr in addresses:
            if addr not in self.names:
                self.names[addr] = self.kallsyms().lookup(addr).symbol
            out.append(self.names[addr])
        return out

    def take(self, rec: layout.RawLearn) -> None:
        """Learn a chain from one sent stack, and give it to the kernel; when none can
        be learned, tell the kernel not to send this location's for a while."""
        frames = chains.frames_of(rec)
        found = self._slots(rec, frames)
        if isinstance(found, str):  # the kernel sends this location's next in 5 ms
            self.book.refuse(found)
            return
        slots, deciding = found
        if self.book.add(rec.location, slots, deciding) is not None:
            self.probe.update("chains", _U64.pack(rec.location), self.book.value(rec.location))

    def _slots(self, rec: layout.RawLearn, frames: list[int]
               ) -> tuple[tuple[tuple[int, int], ...], list[int]] | str:
        """The slots to check and the frames (from the drop function on) they decide, or
        why none can be learned from ``rec``."""
        drop = list(from_drop(frames, rec.location))
        start = len(frames) - len(drop)
        if start < 2:
            return "the location is not among the stack's frames"
        depth = stack_depth(self.reason_name(rec.reason), self.name(drop))
        if depth is None:
            return "no frame of the stack decides the cause"
        upto = start + max(depth, 1) - 1
        if upto > layout.CHAIN_SLOTS:
            return f"the deciding frame is {upto} frames up"
        stack = chains.stack_bytes(rec)
        if stack is None:
            return "the copy of the stack did not reach its end"
        slots = chains.find_slots(stack, frames, upto, self.book.distances)
        return slots if isinstance(slots, str) else (slots, drop[:max(depth, 1)])

    def symbols(self, chain_id: int) -> list[str | None] | None:
        """The deciding frames' symbols of chain ``chain_id``, None for an unknown id."""
        chain = self.book.by_id.get(chain_id)
        if chain is None:
            return None
        self.hits += 1
        return self.name(chain.frames)
