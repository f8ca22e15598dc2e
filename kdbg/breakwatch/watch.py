"""``kdbg watch --break``: from a drop to a stopped kernel.

The tracer runs in the target (a lab guest through its exec channel, or a real
machine through any command printing kdbg's JSON lines). Here, the first drop
that matches goes to the safety guard; if it agrees, a breakpoint is armed on
the call to the drop function at that exact site. The next drop there stops
the kernel: kdbg reports the stop with its backtrace and the skb, then resumes
(or hands the user gdb's prompt), until ``break_count`` stops are done. The
target is always left running with none of kdbg's breakpoints in it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from kdbg.breakwatch.journeys import StopJourneys
from kdbg.breakwatch.model import (
    HIT_BEHIND_WAIT,
    HIT_STACK_WAIT,
    BreakConfig,
    BreakOutcome,
    BreakSink,
    Hit,
    connect_cleanup,
)
from kdbg.breakwatch.remote import drop_lines
from kdbg.breakwatch.remoteloop import WAIT, RemoteLoop
from kdbg.breakwatch.sources import (
    EventStreamError,
    Item,
    Source,
    source_for,
    wait_ready,
)
from kdbg.breakwatch.stopfilter import left_out
from kdbg.debugger import NotADropSite, Session
from kdbg.debugger.attach import Target, from_endpoint, from_lab
from kdbg.debugger.errors import GdbCancelled, TargetLost
from kdbg.debugger.livemodules import ModuleChange, ModuleFollower
from kdbg.debugger.model import Breakpoint, CleanupReport, DropSite, Stop
from kdbg.debugger.run import open_session
from kdbg.debugger.skb import SkbInfo
from kdbg.debugger.skblayout import SkbLayout, read_at_stop, read_layout
from kdbg.drops.watch import WatchConfig
from kdbg.errors import BadInput, GdbTimeout, KdbgError
from kdbg.guard import Decision
from kdbg.guard.decision import BreakpointRefused
from kdbg.signals import StopSignals
from kdbg.symbols.droplines import DropLines
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.targetfacts import LabFacts
from kdbg.trace.event import DropEvent

TRACER_STOP_WAIT = 0.3  # s for the guest's tracer to end on SIGINT before the channel drops
READY_TIMEOUT = 300.0  # bcc compiles in ~9 s in a TCG guest; a loaded host is slower


class _Stop(Exception):
    pass


class BreakWatch(RemoteLoop):
    """One ``watch --break`` over an open session: start the tracer (:meth:`run`), arm
    at the first matching drop site, report each stop, follow the target's modules,
    and always clean up (:meth:`finish`): the target released, then the tracer
    stopped. ``follow`` starts following a lab's modules once the target runs. The
    tracer's items are read by the :class:`RemoteLoop` this one's hooks extend."""

    def __init__(self, watch: WatchConfig, cfg: BreakConfig, sink: BreakSink,
                 session: Session, source: Source, *, lines: DropLines | None = None,
                 follow: Callable[[], ModuleFollower | None] = lambda: None) -> None:
        super().__init__(watch)
        self.watch, self.cfg, self.sink = watch, cfg, sink
        self.session, self.source, self.lines = session, source, lines
        self._follow = follow
        self.follower: ModuleFollower | None = None
        self.hits = 0
        self.refused: list[Decision] = []
        self.refused_at: set[int] = set()
        self.bp: Breakpoint | None = None
        self.site: DropSite | None = None
        self.last_armed: DropEvent | None = None
        self.report: CleanupReport | None = None
        self.pending: list[Hit] = []  # stops whose skb the tracer has not reported yet
        self.journeys = StopJourneys()
        self.signals = StopSignals()
        self.hit_wait = HIT_STACK_WAIT  # s a stop's report waits for the tracer's record
        self.passed_by = 0  # stops on packets the filters leave out (not hits)
        self.layout: SkbLayout | None = None  # where a stop reads the skb's fields

    # -- the loop -------------------------------------------------------------

    def run(self) -> BreakOutcome:
        """Watch, arm, report stops until done, Ctrl-C or SIGTERM; always clean up."""
        self.signals = StopSignals.install()
        self.session.give_way(lambda: bool(self.signals))  # a slow command gives way
        try:
            self._watch()
        except _Stop:
            if not self.signals:
                self.sink.progress(f"the tracer ended: {self.source.stream.error_summary()}")
        except GdbCancelled:
            pass  # Ctrl-C or SIGTERM: clean up below
        except EventStreamError as err:
            raise KdbgError(str(err)) from err
        finally:
            self.finish()
        return BreakOutcome(self.drops, self.hits, tuple(self.refused), self.bp is not None,
                            self.report, bool(self.signals))

    def _watch(self) -> None:
        self.session.lean_stops()
        self.session.run.resume()
        self.follower = self._follow()
        self.sink.progress("starting the tracer in the target")
        stream = self.source.start()
        # While the tracer starts in the target: where the skb's fields lie, so that a
        # stop reads them with a few memory reads (gdb's first look at struct sk_buff
        # took 26-51 s under TCG on 6.12, and each expression after 30-100 ms).
        self.layout = read_layout(self.session.inspect)
        early: list[Item] = []
        if not wait_ready(stream, READY_TIMEOUT, on_item=early.append,
                          stop=lambda: bool(self.signals)):
            raise _Stop
        self.sink.progress(f"tracer attached; waiting for a matching drop "
                           f"(breaks: {self.cfg.break_count})")
        for item in early:
            self.handle(item)
        self.read(stream, self.signals)

    # -- a turn: the target's health, module changes, one item, a look for a stop --

    def before(self) -> bool:
        if self.bp is None:
            self.session.listen(0)  # hear gdb lose the target even with nothing armed
        if self.session.state.lost is not None:
            raise TargetLost(f"the target is gone: {self.session.state.lost}")
        self._expire(time.monotonic())
        if self.hits >= self.cfg.break_count and not self.pending:
            return False
        if self.follower is not None and self.follower.due(self.session):
            self._modules_changed(self.follower.refresh(self.session))
        return True

    def counted(self) -> bool:
        # --count: nothing armed after N drops (e.g. every site refused)
        return super().counted() and self.bp is None

    def wait(self) -> float:
        # Armed with no stop awaiting its skb's drop, the turn waits on gdb (after) and
        # only looks for an item: a stop is read as gdb reports it.
        if self.bp is None:
            return WAIT
        return 0.05 if self.pending else 0.0

    def on_record(self, record: dict[str, Any]) -> None:
        self.sink.record(record)

    def on_text(self, item: Item) -> None:
        if item.kind == "stderr":  # the ready line was the tracer attaching (run)
            self.sink.progress(f"target: {item.text}")

    def on_end(self, status: int | None) -> bool:
        raise _Stop

    def after(self) -> bool:
        if self.bp is None or self.hits >= self.cfg.break_count:
            return True
        try:
            # A stop whose skb's drop is awaited: look without waiting, the drop is due.
            stop = self.session.run.wait_stop(0.0 if self.pending else 0.05)
        except GdbTimeout:
            return True
        return self._stopped(stop)

    # -- drops and arming -----------------------------------------------------

    def on_drop(self, ev: DropEvent) -> None:
        def show() -> None:
            self.sink.drop(self.lines.annotate(ev) if self.lines else ev)

        self.journeys.seen(ev)
        if (self.follower is not None and self.bp is None
                and self.follower.due(self.session, ev.module)):
            report_modules(self.follower.refresh(self.session), self.sink)
        if self.bp is None and ev.address not in self.refused_at:
            # Arm first: a first source lookup in a new file takes addr2line 0.1 s; the
            # drop line is still printed before the verdict.
            armed = self.arm(ev, announce=show, since=self.arrived or None)
            if armed is not None:
                self.site, self.bp = armed
                self.last_armed = ev
                # The target runs again; gdb reads the debug info of the drop's path
                # now rather than at the stop, for the hit's backtrace.
                self.session.inspect.expand(
                    [armed[0].call_addr, *(f.address for f in ev.stack or ())])
        else:
            show()
        for h in list(self.pending):
            if h.before_packet(ev):
                # The tracer still delivers drops from before this stop: its record of
                # the stopped skb is yet to come, however far behind the tracer is.
                h.deadline = max(h.deadline, min(time.monotonic() + self.hit_wait,
                                                 h.resumed_at + HIT_BEHIND_WAIT))
            elif h.skb is not None and ev.skb == h.skb.address and ev.stack:
                h.record_skb = SkbInfo.from_drop(h.skb.address, ev)
                h.kernel_stack = tuple(str(f) for f in ev.stack)
                h.cause = ev.cause
                h.journey = ev.journey or h.journey  # times before the drop itself
                h.confirmed_at = time.monotonic()
                self.pending.remove(h)
                self.sink.confirmed(h)

    def arm(self, ev: DropEvent, announce: Callable[[], None] = lambda: None,
            since: float | None = None) -> tuple[DropSite, Breakpoint] | None:
        """Guard, then break on the drop call at ``ev``'s location; None if refused.
        ``announce`` (the drop's own line) runs before the outcome is reported,
        whatever it is. The time it took is counted from ``since`` (when the drop's
        record arrived; now if None)."""
        stack = tuple(f.address for f in ev.stack) if ev.stack else ()
        t0 = time.monotonic() if since is None else since
        try:
            site, bp = self.place(ev, stack)
        except BreakpointRefused as err:
            announce()
            self.refused_at.add(ev.address)
            if err.decision is not None:
                self.refused.append(err.decision)
                self.sink.refused(err.decision, ev)
            return None
        except NotADropSite as err:
            announce()
            self.refused_at.add(ev.address)
            self.sink.progress(f"not arming at {ev.location}: {err}")
            return None
        except BaseException:
            announce()
            raise
        took = time.monotonic() - t0
        announce()
        self.sink.armed(site, bp, ev, took)
        return site, bp

    def place(self, ev: DropEvent, stack: tuple[int, ...]) -> tuple[DropSite, Breakpoint]:
        """The breakpoint for ``ev`` (through the guard): on the call to the drop function
        at its location."""
        return self.session.run.break_drop_site(ev.address, hw=self.cfg.hw_break,
                                                force=self.cfg.force, stack=stack)

    def _modules_changed(self, change: ModuleChange) -> None:
        """Say what moved; a breakpoint whose module went is deleted (the next drop
        arms afresh), and refusals of addresses that went are forgotten."""
        gone = self.bp is not None and change.covers_gone(self.bp.address)
        report_modules(change, self.sink, self.bp if gone else None)
        self.refused_at = {a for a in self.refused_at if not change.covers_gone(a)}
        if gone and self.bp is not None:
            self.session.run.delete(self.bp)
            self.bp = self.site = None

    # -- stops ----------------------------------------------------------------

    def _stopped(self, stop: Stop) -> bool:
        """Report a stop (or hand the user gdb's prompt); False when that ends the watch.
        A stop on a packet the filters leave out is not a hit: the target resumes."""
        stopped_at = stop.seen_at or time.monotonic()
        skb, reason = self.read_stop(stop)
        why = left_out(self.watch.filters, skb, reason) if skb is not None else None
        if why is not None:
            self.passed_by += 1
            self.sink.progress(f"stopped at {stop.symbol}+0x{stop.offset:x} on a packet the "
                               f"filters leave out ({why}): resumed, not a hit")
            self.session.run.resume()
            return True
        self.hits += 1
        hit = Hit(self.hits, stop, skb, stopped_at=stopped_at, reason=reason)
        if skb is not None:
            hit.journey = self.journeys.read(self.session.inspect, skb.address)
        if self.cfg.interactive:
            self._hand_over(hit)
            return False
        if self.reports_at_stop:
            self.sink.hit(hit)  # what gdb read, at once; the tracer's record confirms it
            hit.reported_at = time.monotonic()
        if self.hits >= self.cfg.break_count and self.bp is not None:
            # Our last stop: take the breakpoint out before the target runs again.
            self.session.run.delete(self.bp)
        self.session.run.resume()
        hit.resumed_at = time.monotonic()
        hit.deadline = hit.resumed_at + self.hit_wait
        self.pending.append(hit)
        return True

    reports_at_stop = True  # a hit is reported at its stop, then confirmed (finish_hit)

    def read_stop(self, stop: Stop) -> tuple[SkbInfo | None, str | None]:
        """The skb and drop reason at a stop on the drop call, read by gdb while the
        target is stopped: the hit is reported at once, and the tracer's record of this
        drop confirms it (and adds its cause and kernel stack) once the target runs."""
        site = self.site
        if not stop.hit or site is None:
            return None, None
        return read_at_stop(self.session.inspect, self.layout, site.callee)

    def finish_hit(self, hit: Hit) -> None:
        """The end of a hit's report: what its tracer's record said, or that none came."""
        self.sink.confirmed(hit)

    def _hand_over(self, hit: Hit) -> None:
        last = self.last_armed
        if last is not None and last.stack:
            hit.kernel_stack = tuple(str(f) for f in last.stack)
            hit.stack_note = "the stack of the drop that armed this breakpoint"
            hit.cause = last.cause
        self.sink.hit(hit)
        # gdb's prompt owns the terminal (its Ctrl-C goes to gdb); a signal to kdbg
        # itself ends the handoff through the clean-up.
        self.signals.restore()
        stop = hit.stop
        self.session.lean_stops(False)  # the user's frames show their arguments
        self.report = self.session.interactive(
            banner=f"kdbg: stopped at {stop.symbol}+0x{stop.offset:x}; "
                   "'kdbg-done' or 'quit' resumes the target and ends kdbg\n",
            stop=self._prompt_facts(hit))

    def _prompt_facts(self, hit: Hit) -> dict[str, object]:
        """What the prompt's kdbg-skb, kdbg-rule and kdbg-where are told of this stop:
        where it is, the drop call and its skb, and the drop that armed it."""
        stop, site, last = hit.stop, self.site, self.last_armed
        facts: dict[str, object] = {"stop": {
            "address": f"0x{stop.address:x}", "label": f"{stop.symbol}+0x{stop.offset:x}",
            "callee": site.callee if site else None,
            "skb": f"0x{hit.skb.address:x}" if hit.skb else None,
            "reason": last.reason if last else None}}
        if last is not None:
            facts["armed_by"] = last.to_json()
        return facts | self.journeys.facts()

    def _expire(self, now: float) -> None:
        """Report the stops whose skb the tracer did not report in time."""
        for h in [h for h in self.pending if now >= h.deadline]:
            self.pending.remove(h)
            h.stack_note = self.unmatched(h)
            self.finish_hit(h)

    def unmatched(self, hit: Hit) -> str:
        """What a stop's report says when the tracer reported nothing of it in time."""
        if hit.skb is None:
            return "no skb read"
        return (f"the tracer reported no drop of skb 0x{hit.skb.address:x} "
                f"within {time.monotonic() - hit.resumed_at:.0f} s")

    def finish(self) -> None:
        """The target first: it is released (and the cleanup record written) before
        the tracer is stopped, so Ctrl-C or SIGTERM ends all of it within 2 s."""
        try:
            if self.report is None:
                self.report = self.session.close()
            self.sink.cleanup(self.report)
        finally:
            self.signals.restore()
            for h in self.pending:  # stopped before the tracer reported the stopped skb
                h.stack_note = "kdbg ended before the tracer reported this skb"
                self.finish_hit(h)
            try:
                # the hit records are out; the tracer's own summary is not waited for long
                self.source.stop(wait=TRACER_STOP_WAIT)
            finally:
                if self.lines is not None:
                    self.lines.close()
                if self.follower is not None:
                    self.follower.close()


def report_modules(change: ModuleChange, sink: BreakSink,
                   removed: Breakpoint | None = None) -> None:
    """A ``modules`` record for ``change`` (and a breakpoint that went with it)."""
    if not change and removed is None:
        return
    record: dict[str, object] = {"type": "modules", "loaded": list(change.added),
                                 "unloaded": list(change.removed),
                                 "debug_files": list(change.debug_loaded)}
    if removed is not None:
        record["removed_breakpoint"] = {"number": removed.number,
                                        "address": f"0x{removed.address:x}",
                                        "label": removed.label}
    sink.record(record)


def resolve_target(cfg: BreakConfig, progress: Callable[[str], None]) -> Target:
    """The gdb side: a lab's target, or an endpoint given by hand."""
    if cfg.gdb is not None:
        if cfg.kallsyms is None and cfg.vmlinux is None:
            raise BadInput("--gdb needs --vmlinux (or --kallsyms) for the target's symbols")
        return from_endpoint(cfg.gdb, kallsyms=cfg.kallsyms, vmlinux=cfg.vmlinux,
                             source=cfg.source)
    return from_lab(cfg.lab or "default", vmlinux=cfg.vmlinux, want_source=cfg.want_source,
                    progress=progress)


def _target_lines(cfg: BreakConfig, target: Target,
                  progress: Callable[[str], None]) -> DropLines | None:
    """file:line for drops, from what the target's facts already hold (for a lab, the
    version and module debug files; the tracer's lab when gdb's endpoint is by hand)."""
    facts = target.facts
    kallsyms: Callable[[], Kallsyms] | None = facts.kallsyms if facts is not None else None
    if facts is None and target.kallsyms is not None:
        ks_path = target.kallsyms
        kallsyms = lambda: Kallsyms.load(ks_path)  # noqa: E731
    if facts is None and cfg.events_cmd is None and None not in (kallsyms, target.vmlinux):
        try:
            facts = LabFacts(cfg.lab or "default")
        except KdbgError as err:
            progress(f"no file:line: {err}")
            return None
    return drop_lines(target.vmlinux, kallsyms, facts, progress)


def follower(target: Target) -> ModuleFollower | None:
    """For a lab: follow its modules for the whole session (a module loaded after attach
    gets its own names and gdb its debug file; one unloaded is forgotten)."""
    if target.facts is None:
        return None
    return ModuleFollower(target.facts, target.debug_root(), target.modules)


def with_journey(watch: WatchConfig) -> WatchConfig:
    """``watch`` as a break-watch runs it: the stopped packet's journey on, unless
    ``watch.journey`` says otherwise (``--no-journey``)."""
    return dataclasses.replace(watch, journey=True) if watch.journey is None else watch


def run(watch: WatchConfig, cfg: BreakConfig, sink: BreakSink) -> BreakOutcome:
    """Watch, arm at the first matching drop site, report stops; always clean up."""
    watch = with_journey(watch)
    source = source_for(cfg, watch, stacks=True)
    return start(cfg, sink, lambda session, target, lines: BreakWatch(
        watch, cfg, sink, session, source, lines=lines, follow=lambda: follower(target)))


MakeWatch = Callable[[Session, Target, DropLines | None], BreakWatch]


def start(cfg: BreakConfig, sink: BreakSink, make: MakeWatch, *,
          drop_lines: bool = True) -> BreakOutcome:
    """Check ``cfg``, reach the target, open the session, and run the break-watch
    ``make`` builds over it (with kernel file:line for its drops when ``drop_lines``)."""
    if cfg.events_cmd is not None and cfg.gdb is None:
        raise BadInput("--events-cmd needs --gdb ENDPOINT to reach the same kernel")
    if cfg.break_count < 1:
        raise BadInput("--break-count must be at least 1")
    lines: DropLines | None = None
    try:
        target = resolve_target(cfg, sink.progress)
        # Before gdb holds the target: for a lab this asks the running guest its version.
        if drop_lines:
            lines = _target_lines(cfg, target, sink.progress)
        sink.progress(f"connecting gdb to {target.label or target.endpoint}")
        session = open_session(target, timeout=120, progress=sink.progress)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM (kdbg.lifetime.Terminated)
        if lines is not None:
            lines.close()
        aborted = connect_cleanup(err)
        sink.cleanup(aborted)
        return BreakOutcome(0, 0, (), False, aborted, True)
    except BaseException:
        if lines is not None:
            lines.close()
        raise
    if cfg.transport is not None:
        session.run.set_guard_transport(cfg.transport)
    return make(session, target, lines).run()

