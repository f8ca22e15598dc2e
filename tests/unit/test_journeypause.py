"""The journey's pause in a storm (kdbg.trace.journeypause): when the hop programs are
detached and attached again, and what a pause says on the journeys it touched, on a
journey recorded from the host kernel (tests/data/journey)."""

from __future__ import annotations

from kdbg.trace import journeylayout as jl
from kdbg.trace.journey import RING_FULL
from kdbg.trace.journeypause import PAUSED, STORM_PER_S, Pauses
from tests.unit.test_journey import journey_of, recorded

S = 1_000_000_000


def test_a_storm_pauses_and_a_quiet_look_resumes() -> None:
    p = Pauses()
    assert p.look(0, 10 * S) is None  # the first look only sets the clock
    assert p.look(STORM_PER_S // 2, 11 * S) is None  # an overflow, not a storm
    assert not p.paused
    assert p.look(STORM_PER_S // 2 + 3 * STORM_PER_S, 12 * S) == "pause"
    assert p.paused and p.spans == [(12 * S, None)]
    assert p.look(10 * STORM_PER_S, 13 * S) is None  # still storming: stays paused
    assert p.look(10 * STORM_PER_S, 14 * S) == "resume"  # nothing counted since
    assert not p.paused and p.spans == [(12 * S, 14 * S)]
    assert p.seconds(20 * S) == 2.0
    assert p.look(10 * STORM_PER_S, 15 * S) is None


def _complete() -> tuple[jl.RawJourneyDrop, dict]:
    raws, rec = recorded("complete")
    return raws[0], rec


def test_a_journey_a_pause_does_not_touch_is_unchanged() -> None:
    raw, rec = _complete()
    j = journey_of(raw, rec)
    first = raw.journey.hops[0].time_ns
    p = Pauses([(raw.ev.time_ns + S, raw.ev.time_ns + 2 * S)])
    assert p.mark(j, first, raw.ev.time_ns) is j
    assert Pauses([(first - 2 * S, first - S)]).mark(j, first, raw.ev.time_ns) is j


def test_a_pause_begun_while_the_packet_crossed() -> None:
    raw, rec = _complete()
    j = journey_of(raw, rec)
    first = raw.journey.hops[0].time_ns
    marked = Pauses([(first + 1, None)]).mark(j, first, raw.ev.time_ns)
    assert marked.hops == j.hops and not marked.complete
    (note,) = marked.notes
    assert note.startswith("hops may be missing: the journey was paused in a storm")


def test_a_packet_first_seen_just_after_a_resume() -> None:
    raw, rec = _complete()
    j = journey_of(raw, rec)
    first = raw.journey.hops[0].time_ns
    (note,) = Pauses([(first - S, first - 2_000_000)]).mark(j, first, raw.ev.time_ns).notes
    assert note == ("it may have entered while the journey was paused in a storm: its "
                    "first hop came 2.000 ms after its hop programs were attached again")


def test_a_drop_during_a_pause_says_it_was_not_followed_for_that() -> None:
    raw, rec = _complete()
    raw.journey.skbaddr = 0  # no hop of it seen
    j = journey_of(raw, rec)
    t = raw.ev.time_ns
    (note,) = Pauses([(t - S, None)]).mark(j, None, t).notes
    assert note.startswith(PAUSED)
    # a full ring is the first reason, and stays the one given
    raw.ring_full_ns = t - 1000
    j = journey_of(raw, rec)
    assert Pauses([(t - S, None)]).mark(j, None, t).notes == (RING_FULL,)
