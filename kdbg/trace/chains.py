"""Call chains learned once from a drop's stack, so later drops need no stack walk.

A cause that reads the drop's stack (NETFILTER_DROP's hook) needs only its first
frames: up to the function that ran the hook. Walking the stack costs a drop about
3.5 µs here; reading a few words off it, 0.05 µs. So the first drop at a location has
its stack walked as before, and the drop program also hands over its frames and the
stack's memory (``struct kdbg_learn``). From them :func:`learn` finds where on the
stack each of those frames' return addresses lies, relative to the program's own frame
pointer. A later drop whose stack holds the same return addresses at the same places
took the same path.

Why that is exact: the distance from one frame's return address to the next is the
size of the frame in between, and that is fixed by the instruction the frame is at (it
is what the kernel's own ORC unwinder reads, per instruction). The program's frame
pointer holds its own return address 8 bytes up (the JIT's prologue). So if the word
at each learned place equals the learned return address, checked from the program's
frame up, every frame to the deciding one is the learned one. :func:`learn` takes a
place only when its return address occurs exactly once between the frame below and the
end of the stack (the copy runs until the unmapped guard page after it), so a stale
copy of an address in some frame's unused bytes is never taken for the real one; when
an address occurs twice (a nested call, a stale copy), the location keeps its stack
walk.
"""

from __future__ import annotations

import ctypes as ct
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kdbg.trace import layout

_U64 = struct.Struct("<Q")
MAX_ID = 255  # ids fit the event's __u8 chain
MAX_OFFSET = layout.CHAIN_SPAN - 16  # the last slot's 8 bytes within the span read


@dataclass(frozen=True)
class Chain:
    """A learned chain: its id, the location it was learned at, each checked slot's
    (offset from the frame pointer, return address), and the drop's frames from the
    function that dropped to the deciding one, innermost first (addresses)."""

    id: int
    location: int
    slots: tuple[tuple[int, int], ...]
    frames: tuple[int, ...]

    @property
    def span(self) -> int:
        """Bytes from the frame pointer that hold every slot."""
        return max(off for off, _ in self.slots) + 8


def find_slots(stack: bytes, frames: Sequence[int], upto: int,
               distances: Mapping[int, int] | None = None
               ) -> tuple[tuple[int, int], ...] | str:
    """Where each of ``frames[1..upto]`` lies in ``stack`` (from the frame pointer to the
    end of the stack), as (offset, address); or why it cannot be told. ``frames[0]`` is
    the program itself, ``frames[1]`` its return address, 8 bytes up. ``distances``:
    for a return address already placed exactly, how far up the next one lies (the size
    of that frame, fixed per instruction); else the next is the only copy of its address
    above."""
    if len(frames) <= upto or stack[8:16] != _U64.pack(frames[1]):
        return "the program's return address is not where its frame pointer says"
    slots = [(8, frames[1])]
    for k in range(2, upto + 1):
        word, prev = _U64.pack(frames[k]), slots[-1][0]
        step = (distances or {}).get(frames[k - 1])
        if step is not None:
            found = [prev + step] if stack[prev + step:prev + step + 8] == word else []
        else:
            found = aligned(stack, word, prev + 8)
        if len(found) != 1:
            return f"frame {k}'s return address occurs {len(found)} times above frame {k - 1}"
        slots.append((found[0], frames[k]))
    if slots[-1][0] > MAX_OFFSET:
        return f"the frames reach {slots[-1][0]} bytes up the stack"
    return tuple(slots)


def aligned(data: bytes, word: bytes, start: int) -> list[int]:
    """The 8-byte aligned offsets from ``start`` on where ``word`` lies in ``data``."""
    out, at = [], data.find(word, start)
    while at >= 0:
        if at % 8 == 0:
            out.append(at)
        at = data.find(word, at + 1)
    return out


def stack_bytes(rec: layout.RawLearn) -> bytes | None:
    """The stack from the frame pointer to its end; None when the copy did not reach the
    end (no unmapped page within it), so what lies past it is unknown."""
    if rec.pages == 0 or rec.pages >= layout.LEARN_PAGES:
        return None
    first = rec.fp & (layout.PAGE - 1)
    return ct.string_at(ct.addressof(rec.stack) + first, rec.pages * layout.PAGE - first)


def frames_of(rec: layout.RawLearn) -> list[int]:
    """The learning drop's frames, innermost (the program) first."""
    n = max(rec.frames_bytes, 0) // 8
    return [int(a) for a in rec.frames[:n]]


class ChainBook:
    """The chains learned in a run: by id for user space, by location for the kernel's
    ``chains`` map (:meth:`value`)."""

    def __init__(self) -> None:
        self.by_id: dict[int, Chain] = {}
        self.by_location: dict[int, list[Chain]] = {}
        self.refused: dict[str, int] = {}  # why a learning was refused -> how often
        # return address -> bytes up to the next frame's, from chains placed exactly
        self.distances: dict[int, int] = {}

    def add(self, location: int, slots: tuple[tuple[int, int], ...],
            frames: Sequence[int]) -> Chain | None:
        """Keep a new chain for ``location``; None if it is known already, or if the
        location or the run has no room left."""
        known = self.by_location.setdefault(location, [])
        if any(c.slots == slots for c in known):
            return None
        if len(known) >= layout.CHAINS_PER_SITE or len(self.by_id) >= MAX_ID:
            self.refuse("no room for another chain")
            return None
        chain = Chain(len(self.by_id) + 1, location, slots, tuple(frames))
        known.append(chain)
        self.by_id[chain.id] = chain
        for (lo, ret), (hi, _) in zip(slots, slots[1:], strict=False):
            self.distances.setdefault(ret, hi - lo)
        return chain

    def refuse(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1

    def value(self, location: int) -> bytes:
        """The ``struct kdbg_chains`` of ``location``, for the kernel's map."""
        out = layout.RawChains()
        chains = self.by_location.get(location, [])
        out.span = max((c.span for c in chains), default=0)
        for raw, chain in zip(out.c, chains, strict=False):
            raw.id, raw.nslots, raw.span = chain.id, len(chain.slots), chain.span
            for i, (off, ret) in enumerate(chain.slots):
                raw.off[i], raw.ret[i] = off, ret
        return bytes(out)
