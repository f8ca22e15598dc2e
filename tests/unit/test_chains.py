"""Learning a call chain from a drop's stack (kdbg/trace/chains.py), on stacks the drop
program sent on this project's 6.18 kernel (tests/data/chains: a NETFILTER_DROP at the
input, output and prerouting hooks, each from the program's frame pointer to the end of
its stack)."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from kdbg.causes import netfilter
from kdbg.trace import chains, layout
from tests.conftest import DATA

U64 = struct.Struct("<Q")


def sample(hook: str) -> dict[str, Any]:
    rec = json.loads((DATA / "chains" / f"learn.{hook}.6.18.json").read_text())
    rec["frames"] = [int(a, 16) for a in rec["frames"]]
    rec["stack"] = bytes.fromhex(rec["stack"])
    return rec


def deciding(rec: dict[str, Any]) -> int:
    """The raw index of the frame that runs the hook (frames from the drop function on
    start at index 2: the program, then bpf_trace_run4)."""
    depth = netfilter.hook_depth([s.split("+")[0] for s in rec["symbols"][2:]])
    assert depth is not None
    return 2 + depth - 1


@pytest.mark.parametrize("hook", ["input", "output", "prerouting"])
def test_each_frame_is_found_once_above_the_one_below(hook: str) -> None:
    rec = sample(hook)
    upto = deciding(rec)
    slots = chains.find_slots(rec["stack"], rec["frames"], upto)
    assert isinstance(slots, tuple), slots
    assert [ret for _, ret in slots] == rec["frames"][1:upto + 1]
    offsets = [off for off, _ in slots]
    assert offsets[0] == 8 and offsets == sorted(set(offsets))
    for off, ret in slots:  # each slot holds its return address
        assert rec["stack"][off:off + 8] == U64.pack(ret)
    assert netfilter.hook_of([s.split("+")[0] for s in rec["symbols"][2:upto + 1]])[0] == hook


def test_a_second_copy_of_an_address_is_refused_not_guessed() -> None:
    rec = sample("input")
    upto = deciding(rec)
    slots = chains.find_slots(rec["stack"], rec["frames"], upto)
    assert isinstance(slots, tuple)
    # A stale copy of the hook's return address in a frame's unused bytes, above the
    # frame below it: two candidates, so the place cannot be told.
    below, hook_at = slots[-2][0], slots[-1][0]
    ghost = below + 8 if below + 8 < hook_at else hook_at + 8
    stack = bytearray(rec["stack"])
    stack[ghost:ghost + 8] = U64.pack(rec["frames"][upto])
    why = chains.find_slots(bytes(stack), rec["frames"], upto)
    assert why == f"frame {upto}'s return address occurs 2 times above frame {upto - 1}"


def test_a_known_frame_size_places_the_next_address_despite_a_copy() -> None:
    rec = sample("input")
    upto = deciding(rec)
    slots = chains.find_slots(rec["stack"], rec["frames"], upto)
    assert isinstance(slots, tuple)
    book = chains.ChainBook()
    book.add(int(rec["location"], 16), slots, rec["frames"][2:upto + 1])
    # The same stack with a stale copy: the frame sizes learned from the clean one
    # place every address exactly, and the copy is not looked at.
    stack = bytearray(rec["stack"])
    ghost = slots[-2][0] + 8
    stack[ghost:ghost + 8] = U64.pack(rec["frames"][upto])
    assert chains.find_slots(bytes(stack), rec["frames"], upto, book.distances) == slots
    # A stack whose word is not where the size says is refused.
    stack[slots[-1][0]:slots[-1][0] + 8] = bytes(8)
    assert isinstance(chains.find_slots(bytes(stack), rec["frames"], upto, book.distances), str)


def test_the_program_frame_must_hold_its_own_return_address() -> None:
    rec = sample("output")
    stack = bytes(16) + rec["stack"][16:]
    why = chains.find_slots(stack, rec["frames"], deciding(rec))
    assert why == "the program's return address is not where its frame pointer says"


def test_chains_map_value_has_every_slot_and_the_widest_span() -> None:
    book = chains.ChainBook()
    loc = 0xFFFFFFFF81FB4BDF
    for hook in ("input", "prerouting"):
        rec = sample(hook)
        upto = deciding(rec)
        slots = chains.find_slots(rec["stack"], rec["frames"], upto)
        assert isinstance(slots, tuple)
        assert book.add(loc, slots, rec["frames"][2:upto + 1]) is not None
        assert book.add(loc, slots, rec["frames"][2:upto + 1]) is None  # known already
    raw = layout.RawChains.from_buffer_copy(book.value(loc))
    assert raw.span == max(c.span for c in book.by_location[loc]) < layout.CHAIN_SPAN
    for i, chain in enumerate(book.by_location[loc]):
        got = raw.c[i]
        assert (got.id, got.nslots, got.span) == (chain.id, len(chain.slots), chain.span)
        assert [(got.off[j], got.ret[j]) for j in range(got.nslots)] == list(chain.slots)
    assert raw.c[2].id == 0  # no third chain


def test_a_run_has_room_for_a_bounded_number_of_chains() -> None:
    book = chains.ChainBook()
    for i in range(layout.CHAINS_PER_SITE + 1):
        book.add(1, ((8, 1), (16 + 8 * i, 2)), (2,))
    assert len(book.by_location[1]) == layout.CHAINS_PER_SITE
    assert book.refused == {"no room for another chain": 1}


def test_the_copy_must_reach_the_end_of_the_stack() -> None:
    rec = layout.RawLearn()
    rec.fp, rec.pages = 0xFFFFC90000003BD0, layout.LEARN_PAGES  # no unmapped page met
    assert chains.stack_bytes(rec) is None
    rec.pages = 1
    got = chains.stack_bytes(rec)
    assert got is not None and len(got) == layout.PAGE - 0xBD0
