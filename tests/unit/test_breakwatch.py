"""``watch --break``'s loop (:class:`kdbg.breakwatch.BreakWatch`) driven by a fake
session and a recorded tracer (a JSON-lines file through a real CommandSource)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from kdbg.breakwatch import BreakConfig, BreakWatch, Hit, watch_remote
from kdbg.breakwatch.model import HIT_BEHIND_WAIT
from kdbg.breakwatch.sources import CommandSource, LabSource, source_for
from kdbg.debugger.errors import GdbCancelled
from kdbg.debugger.livemodules import ModuleChange
from kdbg.debugger.model import Breakpoint, CleanupReport, DropSite, Stop
from kdbg.debugger.skb import SkbInfo
from kdbg.drops import WatchConfig, guest_watch_argv
from kdbg.errors import GdbError, GdbTimeout
from kdbg.guard.decision import BreakpointRefused
from kdbg.guard.judge import Guard
from kdbg.lab.guest import kdbg_argv
from kdbg.prompt import state as prompt_state
from kdbg.symbols.kallsyms import ModuleSpan
from kdbg.trace.event import DropEvent
from kdbg.trace.filters import PacketFilters
from kdbg.trace.headers import Headers
from kdbg.trace.journey import DROP, LAST_HOP, Journey, JourneyHop, JourneyTable
from kdbg.trace.journeylayout import RawJourneyDrop
from tests.conftest import DATA

JSONL = DATA / "jsonl" / "netfilter_drop.6.18.jsonl"
SITE = 0xFFFFFFFF81F657B8  # every drop in the file: nft_do_chain+0x3e8
CALL = SITE - 5
SKB = 0xFFFF8881D3E4F500


def recorded() -> CommandSource:
    """The tracer as recorded: ready first, then its 23 drops and summary."""
    return CommandSource(f"echo 'kdbg: watching skb:kfree_skb' >&2; sleep 0.3; "
                         f"cat {shlex.quote(str(JSONL))}")


class FakeState:
    def __init__(self) -> None:
        self.lost: str | None = None
        self.vmlinux = None
        self.kallsyms = None


class FakeInspection:
    """Registers at the stop (``skb`` as the drop function's argument) and the memory
    ``memory`` holds (address -> bytes), as gdb reads them."""

    def __init__(self, skb: int = SKB, memory: dict[int, bytes] | None = None) -> None:
        self.state = FakeState()
        self.skb = skb
        self.memory = memory or {}
        self.expanded: list[list[int]] = []  # expand() calls: the addresses of each

    def expand(self, addresses: list[int]) -> None:
        self.expanded.append(list(addresses))

    def read_args(self, count: int = 6) -> list[int]:
        return [0xFFFF888100000000, self.skb][:count]

    def read_memory(self, addr: int, length: int, timeout: float = 10.0) -> bytes:
        if addr not in self.memory:
            raise GdbError(f"Cannot access memory at address 0x{addr:x}")
        return self.memory[addr][:length]


class FakeRunControl:
    """What a break-watch asks of ``session.run``; ``calls`` records it in order.
    ``stops`` are handed out by wait_stop once armed; ``on_wait`` runs on each wait."""

    def __init__(self, calls: list[str], refuse: BreakpointRefused | None, stops: int,
                 on_wait: Any) -> None:
        self.calls = calls
        self.refuse = refuse
        self.stops = stops
        self.on_wait = on_wait
        self.armed: Breakpoint | None = None

    def resume(self, timeout: float = 10.0) -> None:
        self.calls.append("resume")

    def break_drop_site(self, location: int, *, hw: bool = False, force: bool = False,
                        stack: Any = ()) -> tuple[DropSite, Breakpoint]:
        self.calls.append(f"break_drop_site 0x{location:x} hw={hw}")
        if self.refuse is not None:
            raise self.refuse
        site = DropSite(location=location, call_addr=CALL, call_len=5,
                        callee="sk_skb_reason_drop", caller="nft_do_chain+0x3e3",
                        instruction="call sk_skb_reason_drop")
        self.armed = Breakpoint(1, CALL, "nft_do_chain+0x3e3", hw)
        return site, self.armed

    def wait_stop(self, timeout: float) -> Stop:
        if self.on_wait is not None:
            self.on_wait()
        if self.armed is None or self.stops == 0:
            raise GdbTimeout("no stop")
        self.stops -= 1
        self.calls.append("stopped")
        # gdb's report read a moment ago (as Inspection.stop_from stamps it)
        return Stop("breakpoint-hit", CALL, "nft_do_chain", 0x3E3, breakpoint=1,
                    seen_at=time.monotonic() - 0.5)

    def delete(self, bp: Breakpoint) -> None:
        self.calls.append(f"delete {bp.number}")
        self.armed = None


class FakeSession:
    """The Session a break-watch uses: ``run``, ``inspect`` and ``state``, its own
    ``listen``, ``give_way`` and ``close``; ``calls`` records what it was asked."""

    def __init__(self, *, refuse: BreakpointRefused | None = None,
                 stops: int = 1, on_wait: Any = None,
                 inspect: FakeInspection | None = None) -> None:
        self.calls: list[str] = []
        self.inspect = inspect or FakeInspection()
        self.state = self.inspect.state
        self.run = FakeRunControl(self.calls, refuse, stops, on_wait)
        self.cancel: Any = None
        self.lean: list[bool] = []  # lean_stops calls, in order

    def lean_stops(self, lean: bool = True) -> None:
        self.lean.append(lean)

    def listen(self, timeout: float = 0.0) -> None:
        pass

    def give_way(self, cancel: Any) -> None:
        self.cancel = cancel

    def close(self) -> CleanupReport:
        self.calls.append("close")
        return CleanupReport(steps=["detached (the target resumed)"])


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    def of(self, kind: str) -> list[Any]:
        return [v for k, v in self.events if k == kind]

    def progress(self, message: str) -> None:
        self.events.append(("progress", message))

    def drop(self, event: Any) -> None:
        self.events.append(("drop", event))

    def armed(self, site: DropSite, bp: Breakpoint, event: Any, seconds: float) -> None:
        self.events.append(("armed", (site, bp)))

    def refused(self, decision: Any, event: Any) -> None:
        self.events.append(("refused", decision))

    def hit(self, hit: Hit) -> None:
        self.events.append(("hit", hit))

    def confirmed(self, hit: Hit) -> None:
        self.events.append(("confirmed", hit))

    def record(self, record: dict[str, object]) -> None:
        self.events.append(("record", record))

    def cleanup(self, report: CleanupReport) -> None:
        self.events.append(("cleanup", report))


class FakeFollower:
    """A module follower whose guest changes once, with ``change``."""

    def __init__(self, change: ModuleChange) -> None:
        self.change: ModuleChange | None = change
        self.closed = 0

    def due(self, session: Any, module: str | None = None) -> bool:
        return self.change is not None and session.run.armed is not None

    def refresh(self, session: Any) -> ModuleChange:
        change, self.change = self.change, None
        assert change is not None
        return change

    def close(self) -> None:
        self.closed += 1


def watch(session: FakeSession, cfg: BreakConfig | None = None, *,
          wcfg: WatchConfig | None = None, follower: Any = None,
          source: CommandSource | None = None) -> tuple[BreakWatch, Sink]:
    sink = Sink()
    bw = BreakWatch(wcfg or WatchConfig(duration=20), cfg or BreakConfig(lab="lab"), sink,
                    session, source or recorded(),  # type: ignore[arg-type]
                    follow=lambda: follower)
    return bw, sink


def test_a_matching_drop_arms_and_the_hit_is_reported() -> None:
    session = FakeSession()
    bw, sink = watch(session, BreakConfig(lab="lab", hw_break=True))
    outcome = bw.run()
    assert session.calls[:2] == ["resume", f"break_drop_site 0x{SITE:x} hw=True"]
    # the last stop: the breakpoint goes before the target runs on
    assert session.calls[2:] == ["stopped", "delete 1", "resume", "close"]
    (site, bp), = sink.of("armed")
    assert (site.call_addr, bp.number, bp.hw) == (CALL, 1, True)
    (hit,) = sink.of("hit")
    assert hit.number == 1 and hit.stop.symbol == "nft_do_chain"
    # reported at the stop with what gdb read: here no DWARF vmlinux, so the address
    assert hit.skb is not None and hit.skb.address == SKB and hit.skb.len is None
    # then the tracer's record of that skb's drop confirms it, and adds its stack
    assert sink.of("confirmed") == [hit] and hit.record_skb is not None
    assert hit.record_skb.summary() == ("skb 0xffff8881d3e4f500, len 34, dev veth-b, "
                                        "netns 4026532246, "
                                        "udp 10.77.9.1:40000 -> 10.77.9.2:5555")
    assert hit.differences == []  # nothing both read
    assert hit.kernel_stack is not None and hit.kernel_stack[1] == "nft_do_chain+0x3e8"
    kinds = sink.kinds()
    assert kinds.index("hit") < kinds.index("confirmed") < kinds.index("cleanup")
    # printed before the target was let run again
    assert hit.stopped_at < hit.reported_at <= hit.resumed_at <= hit.confirmed_at
    assert len(sink.of("cleanup")) == 1 and sink.of("cleanup")[0].ok
    assert (outcome.hits, outcome.armed, outcome.interrupted, outcome.exit_status) == (
        1, True, False, 0)
    assert session.lean == [True]  # stops described without arguments while kdbg reads them
    # once armed, gdb read the debug info of the call and the arming drop's stack
    (expanded,) = session.inspect.expanded
    assert expanded[0] == CALL and SITE in expanded and len(expanded) > 2


def test_a_stop_that_is_not_the_last_keeps_its_breakpoint() -> None:
    session = FakeSession(stops=2)
    bw, sink = watch(session, BreakConfig(lab="lab", break_count=2))
    assert bw.run().hits == 2
    # the first stop resumes with the breakpoint in (gdb steps over it); the last
    # takes it out before the target runs on
    assert session.calls[2:] == ["stopped", "resume", "stopped", "delete 1", "resume",
                                 "close"]
    assert [h.number for h in sink.of("hit")] == [1, 2]


def test_a_hit_is_timed_from_when_gdb_reported_the_stop() -> None:
    session = FakeSession()
    bw, sink = watch(session)
    bw.run()
    (hit,) = sink.of("hit")
    # the stop's own stamp (when its *stopped record was read), not when the loop got to it
    assert hit.stopped_at == hit.stop.seen_at > 0
    assert hit.stopped_at + 0.5 <= hit.resumed_at <= time.monotonic()


def test_arming_is_timed_from_the_drop_record_arriving() -> None:
    session = FakeSession()
    bw, sink = watch(session)
    times: list[float] = []
    sink.armed = lambda site, bp, event, seconds: times.append(seconds)  # type: ignore
    first = next(line for line in JSONL.read_text().splitlines() if '"type":"drop"' in line)
    ev = DropEvent.from_json(json.loads(first))
    before = time.monotonic()
    assert bw.arm(ev, since=before - 2.0) is not None
    assert 2.0 <= times[0] < 2.0 + (time.monotonic() - before)


def journey_source(tmp_path: Path) -> tuple[CommandSource, FakeInspection, list[Any]]:
    """A tracer with --journey, as recorded on a real kernel (tests/kernel/test_journey.py:
    three datagrams through a veth pair and a bridge into a DROP rule, with their stacks
    and journeys), stopped at the second: gdb finds its slot where the drops said the
    table is, as it was at the call to the drop function (not yet ended by its drop)."""
    rec = json.loads((DATA / "journey" / "veth_bridge.6.18.json").read_text())["complete"]
    events = rec["events"]
    jsonl = tmp_path / "journey.jsonl"
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in events))
    raw = RawJourneyDrop.from_buffer_copy(bytes.fromhex(rec["records"][1]))
    raw.journey.ended = 0
    table = JourneyTable.from_json(events[1]["journey_table"])
    inspect = FakeInspection(raw.ev.skbaddr, {table.slot_address(raw.ev.skbaddr):
                                              bytes(raw.journey)})
    source = CommandSource(f"echo 'kdbg: watching skb:kfree_skb' >&2; sleep 0.3; "
                           f"cat {shlex.quote(str(jsonl))}")
    return source, inspect, events


def test_the_hit_carries_the_stopped_packets_journey(tmp_path: Path) -> None:
    """The tracer's record of the stopped skb gives the hit its journey, times before the
    drop; before it comes, the one gdb read at the stop stands, times before its last
    hop."""
    source, inspect, events = journey_source(tmp_path)
    session = FakeSession(inspect=inspect)
    bw, sink = watch(session, source=source)
    bw.run()
    (hit,) = sink.of("hit")
    assert hit.skb.address == int(events[1]["skb"], 16)
    assert hit.journey is not None and hit.journey.reference == DROP and hit.journey.complete
    assert hit.journey.to_json()["journey"] == events[1]["journey"]
    assert bw.journeys.names == {h["netns"]: h["netns_name"] for h in events[0]["journey"]}


def test_at_the_prompt_the_journey_is_read_at_the_stop(tmp_path: Path) -> None:
    source, inspect, events = journey_source(tmp_path)
    session = FakeSession(inspect=inspect)
    handed: list[dict[str, Any]] = []

    def interactive(banner: str, stop: dict[str, Any]) -> CleanupReport:
        handed.append(stop)
        assert session.lean == [True, False]  # the prompt's frames show their arguments
        return CleanupReport(steps=["detached (the target resumed)"])

    session.interactive = interactive  # type: ignore[attr-defined]
    bw, sink = watch(session, BreakConfig(lab="lab", interactive=True), source=source)
    bw.run()
    (hit,) = sink.of("hit")
    assert hit.journey is not None and hit.journey.reference == LAST_HOP
    assert [h.ifname for h in hit.journey.hops] == ["veth-a", "veth-b", "veth-b", "br0", "br0"]
    assert hit.journey.hops[-1].before_ns == 0 and hit.journey.complete
    facts = handed[0]
    assert facts["journey_table"] == events[0]["journey_table"]
    assert facts["netns_names"] == {str(h["netns"]): h["netns_name"]
                                    for h in events[0]["journey"]}
    # the prompt's state reads back what kdbg wrote
    state = prompt_state.from_json({"version": 1, **json.loads(json.dumps(facts))})
    assert state.journey_table == JourneyTable.from_json(events[0]["journey_table"])


def test_a_table_gdb_cannot_read_says_so(tmp_path: Path) -> None:
    source, inspect, _events = journey_source(tmp_path)
    inspect.memory.clear()
    session = FakeSession(inspect=inspect)
    session.interactive = lambda banner, stop: CleanupReport()  # type: ignore[attr-defined]
    bw, sink = watch(session, BreakConfig(lab="lab", interactive=True), source=source)
    bw.run()
    (hit,) = sink.of("hit")
    assert hit.journey is not None and hit.journey.hops == ()
    assert hit.journey.notes[0].startswith("its slot of the journey table could not be read: "
                                           "Cannot access memory at address 0x")


def test_cleanup_runs_once_even_when_the_loop_fails() -> None:
    def lose() -> None:
        session.state.lost = "gdb lost its connection to tcp:127.0.0.1:1"

    session = FakeSession(stops=0, on_wait=lose)
    bw, sink = watch(session)
    with pytest.raises(Exception, match="the target is gone"):
        bw.run()
    assert session.calls.count("close") == 1 and len(sink.of("cleanup")) == 1


def test_a_refused_breakpoint_is_reported_with_its_reason() -> None:
    guard = Guard(None, missing="the debugger was given no kallsyms of the target")
    decision = guard.judge(SITE, transport="kgdboe")
    session = FakeSession(refuse=BreakpointRefused("refused", decision=decision))
    bw, sink = watch(session, wcfg=WatchConfig(count=23, duration=20))
    outcome = bw.run()
    (refused,) = sink.of("refused")  # one verdict per site, not one per drop
    assert refused.refused and "no kallsyms" in refused.why
    assert [c for c in session.calls if c.startswith("break")] == [
        f"break_drop_site 0x{SITE:x} hw=False"]
    assert len(sink.of("drop")) == 23 and session.calls[-1] == "close"
    assert (outcome.hits, outcome.armed, outcome.exit_status) == (0, False, 3)


def test_module_changes_are_followed_and_a_breakpoint_that_went_is_deleted() -> None:
    span = ModuleSpan("nf_tables", CALL - 0x100, 0x1000)
    change = ModuleChange(("xt_foo",), ("nf_tables",), ("xt_foo",), (span,))
    follower = FakeFollower(change)
    session = FakeSession(stops=0)
    bw, sink = watch(session, wcfg=WatchConfig(count=23, duration=20), follower=follower)
    bw.run()
    (record,) = [r for r in sink.of("record") if r.get("type") == "modules"]
    assert record == {"type": "modules", "loaded": ["xt_foo"], "unloaded": ["nf_tables"],
                      "debug_files": ["xt_foo"],
                      "removed_breakpoint": {"number": 1, "address": f"0x{CALL:x}",
                                             "label": "nft_do_chain+0x3e3"}}
    assert "delete 1" in session.calls
    assert session.calls.count(f"break_drop_site 0x{SITE:x} hw=False") == 2  # armed afresh
    assert follower.closed == 1 and session.calls.count("close") == 1


def test_ctrl_c_ends_the_watch_cleanly() -> None:
    before = signal.getsignal(signal.SIGINT)  # ignored when pytest runs as a background job
    session = FakeSession(stops=0, on_wait=lambda: os.kill(os.getpid(), signal.SIGINT))
    bw, sink = watch(session)
    outcome = bw.run()
    assert outcome.interrupted and outcome.exit_status == 0 and outcome.armed
    assert session.calls[-1] == "close" and session.calls.count("close") == 1
    assert len(sink.of("cleanup")) == 1
    assert session.cancel is not None and session.cancel()  # slow gdb commands gave way
    assert signal.getsignal(signal.SIGINT) is before  # restored
    assert not [m for m in sink.of("progress") if m.startswith("the tracer ended")]


def test_a_cancelled_gdb_command_ends_the_watch_cleanly() -> None:
    def cancel() -> None:
        raise GdbCancelled("cancelled")

    session = FakeSession(stops=0, on_wait=cancel)
    bw, sink = watch(session)
    outcome = bw.run()
    assert outcome.armed and outcome.hits == 0
    assert session.calls.count("close") == 1 and len(sink.of("cleanup")) == 1


def remote(watch_cfg: WatchConfig, command: str) -> tuple[int, Sink]:
    """``kdbg watch --events-cmd COMMAND`` without --break, into a recording sink."""
    sink = Sink()
    status = watch_remote(watch_cfg, BreakConfig(events_cmd=command), sink)  # type: ignore[arg-type]
    return status, sink


def test_watch_remote_shows_every_drop_and_returns_the_tracers_status() -> None:
    status, sink = remote(WatchConfig(duration=20), (
        f"echo 'kdbg: watching skb:kfree_skb' >&2; cat {shlex.quote(str(JSONL))}; "
        "echo 'kdbg: 23 drops' >&2; exit 3"))
    assert status == 3
    assert len(sink.of("drop")) == 23 and sink.of("drop")[0].symbol == "nft_do_chain"
    assert [r["type"] for r in sink.of("record")] == ["summary"]
    assert sorted(sink.of("progress")) == ["23 drops", "watching skb:kfree_skb"]


def test_watch_remote_stops_at_the_count_and_at_the_deadline() -> None:
    started = time.monotonic()
    status, sink = remote(WatchConfig(count=5, duration=20),
                          f"cat {shlex.quote(str(JSONL))}; sleep 30")
    assert status == 0 and len(sink.of("drop")) == 5
    status, sink = remote(WatchConfig(duration=1), "echo 'kdbg: watching' >&2; sleep 30")
    assert status == 0 and sink.of("drop") == [] and sink.of("progress") == ["watching"]
    assert time.monotonic() - started < 10  # the tracer was stopped, not waited for


def test_the_guests_kdbg_watch_is_one_command_line() -> None:
    """The break-watch's lab source and the lab recorder run the same kdbg in the guest,
    with the same filters; only the output and the limits differ."""
    cfg = WatchConfig(filters=PacketFilters(reasons=("NETFILTER_DROP",), dports=(5555,)),
                      count=5, duration=2.0)
    kdbg, filters = kdbg_argv(), ["--reason", "NETFILTER_DROP", "--dport", "5555"]
    source = source_for(BreakConfig(lab="lab1"), cfg, stacks=True)
    assert isinstance(source, LabSource) and source.lab_name == "lab1"
    assert source.argv == [*kdbg, "watch", "--json", *filters, "--stack"]
    stacked = WatchConfig(filters=cfg.filters, stack=True, causes=False)
    assert guest_watch_argv(stacked, "--json", stack=True) == [
        *kdbg, "watch", "--json", *filters, "--stack", "--no-causes"]
    assert guest_watch_argv(cfg, "--write", "-", "--snaplen", "128", limits=True) == [
        *kdbg, "watch", "--write", "-", "--snaplen", "128", *filters, "--count", "5",
        "--duration", "2.0"]
    journeyed = WatchConfig(filters=cfg.filters, journey=True)
    assert guest_watch_argv(journeyed, "--json", stack=True) == [
        *kdbg, "watch", "--json", *filters, "--journey", "--stack"]


def test_the_journey_is_on_for_a_break_watch_unless_turned_off() -> None:
    """One place holds the default (``kdbg watch --break`` and ``kdbg demo`` alike): a
    break-watch follows the stopped packet's journey; a plain watch does not."""
    from kdbg.breakwatch.watch import with_journey
    from kdbg.drops import WatchConfig, guest_watch_argv

    plain = WatchConfig()
    assert plain.journey is None and "--journey" not in guest_watch_argv(plain, "--json")
    assert with_journey(plain).journey is True
    assert "--journey" in guest_watch_argv(with_journey(plain), "--json")
    assert with_journey(WatchConfig(journey=False)).journey is False


def _stopped_hit(packet_ns: int, waited: float) -> Hit:
    """A hit pending its record: stopped with skb SKB, whose journey (read at the stop)
    ends with a hop at ``packet_ns``, and resumed ``waited`` s ago."""
    hop = JourneyHop("net:netif_receive_skb", packet_ns, 0, 4026532246, None, "veth-b", 2,
                     "veth", Headers(34, 0x0800))
    resumed = time.monotonic() - waited
    return Hit(1, Stop("breakpoint-hit", CALL, "nft_do_chain", 0x3E3, breakpoint=1),
               SkbInfo(SKB), journey=Journey((hop,)), resumed_at=resumed,
               deadline=resumed + 30)


def test_a_stop_waits_for_its_record_while_the_tracer_is_still_behind_it() -> None:
    """A lab guest's tracer can be tens of seconds behind: while it delivers drops from
    before the stopped packet's last hop, the stop's record is still to come."""
    first = DropEvent.from_json(json.loads(JSONL.read_text().splitlines()[0]))
    ours = dataclasses.replace(first, time_ns=first.time_ns - 2_000)  # clocks apart
    older = dataclasses.replace(first, time_ns=first.time_ns - 20_000_000, skb=SKB + 0x100)
    later = dataclasses.replace(older, time_ns=first.time_ns + 1_000)
    bw, sink = watch(FakeSession())
    bw.bp = Breakpoint(1, CALL, "nft_do_chain+0x3e3")  # armed: a drop only shows
    hit = _stopped_hit(first.time_ns, waited=29.0)
    bw.pending.append(hit)
    bw.on_drop(older)  # from before the packet: the wait goes on, 30 s from now
    assert hit.deadline - time.monotonic() > 29.0 and bw.pending == [hit]
    deadline = hit.deadline
    bw.on_drop(later)  # after it, another skb: no longer
    assert hit.deadline == deadline and bw.pending == [hit]
    bw.on_drop(ours)
    assert bw.pending == [] and sink.of("confirmed") == [hit] and hit.record_skb is not None
    # never past HIT_BEHIND_WAIT from the resume, however far behind
    late = _stopped_hit(first.time_ns, waited=HIT_BEHIND_WAIT - 5)
    bw.pending.append(late)
    bw.on_drop(older)
    assert late.deadline == pytest.approx(late.resumed_at + HIT_BEHIND_WAIT)
    bw._expire(late.deadline)
    assert late.stack_note is not None and late.stack_note.startswith(
        f"the tracer reported no drop of skb 0x{SKB:x} within 29")
    # without a journey read at the stop nothing says where the tracer is: 30 s
    assert not Hit(2, hit.stop, SkbInfo(SKB)).before_packet(older)


def test_a_stop_on_a_packet_the_filters_leave_out_is_resumed_and_not_a_hit() -> None:
    """A breakpoint is on a code location: a drop for another port at the same call
    stops the kernel too; it is resumed at once, and the watch waits for its packet."""
    session = FakeSession(stops=2)
    bw, sink = watch(session, wcfg=WatchConfig(duration=20,
                                               filters=PacketFilters(dports=(5595,))))
    reads = iter([(SkbInfo(SKB, proto="udp", dport=5555), "NETFILTER_DROP"),
                  (SkbInfo(SKB, proto="udp", dport=5595), "NETFILTER_DROP")])
    bw.read_stop = lambda stop: next(reads)  # type: ignore[method-assign]
    outcome = bw.run()
    assert (outcome.hits, bw.passed_by) == (1, 1)
    assert session.calls[1:] == [f"break_drop_site 0x{SITE:x} hw=False", "stopped", "resume",
                                 "stopped", "delete 1", "resume", "close"]
    (hit,) = sink.of("hit")
    assert hit.skb.dport == 5595 and hit.number == 1
    assert any("on a packet the filters leave out (dport 5555, not --dport 5595): resumed, "
               "not a hit" in m for m in sink.of("progress"))
