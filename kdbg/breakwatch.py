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

import contextlib
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kdbg.debugger import NotADropSite, Session
from kdbg.debugger.errors import GdbCancelled, TargetLost
from kdbg.debugger.livemodules import ModuleChange, ModuleFollower
from kdbg.debugger.model import Breakpoint, CleanupReport, DropSite, Stop
from kdbg.debugger.run import open_session
from kdbg.debugger.skb import SkbInfo, read_skb
from kdbg.debugger.targets import Target, from_endpoint, from_lab
from kdbg.errors import BadInput, BreakpointRefused, GdbTimeout, KdbgError
from kdbg.events import CommandSource, EventStream, EventStreamError, Item, LabSource, wait_ready
from kdbg.guard import Decision
from kdbg.signals import StopSignals
from kdbg.symbols.droplines import DropLines
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.trace.event import DropEvent
from kdbg.watch import WatchConfig, remote_options

TRACER_STOP_WAIT = 0.3  # s for the guest's tracer to end on SIGINT before the channel drops
READY_TIMEOUT = 300.0  # bcc compiles in ~9 s in a TCG guest; a loaded host is slower


@dataclass(frozen=True)
class BreakConfig:
    """Where the tracer and the debugger reach the target, and how to break."""

    lab: str | None = None
    events_cmd: str | None = None
    gdb: str | None = None
    vmlinux: str | None = None
    kallsyms: str | None = None
    transport: str | None = None
    interactive: bool = False
    force: bool = False
    hw: bool = False
    break_count: int = 1


class BreakSink(Protocol):
    """Where a break-watch reports to (text or JSON lines)."""

    def progress(self, message: str) -> None: ...
    def drop(self, event: DropEvent) -> None: ...
    def armed(self, site: DropSite, bp: Breakpoint, event: DropEvent,
              seconds: float) -> None: ...
    def refused(self, decision: Decision, event: DropEvent) -> None: ...
    def hit(self, hit: Hit) -> None: ...
    def record(self, record: dict[str, object]) -> None: ...
    def cleanup(self, report: CleanupReport) -> None: ...


@dataclass
class Hit:
    """One stop at the drop site. ``kernel_stack`` is the stopped skb's stack as the
    tracer captured it in the kernel (ORC-unwound, so right past module frames where
    gdb without CFI stops), matched by skb address once the target resumed."""

    number: int
    stop: Stop
    skb: SkbInfo | None
    kernel_stack: tuple[str, ...] | None = None
    stack_note: str | None = None
    cause: dict[str, Any] | None = None  # the stopped skb's drop cause, from the tracer
    deadline: float = 0.0
    stopped_at: float = 0.0  # time.monotonic() when kdbg saw the stop


HIT_STACK_WAIT = 30.0  # seconds to wait for the stopped skb's drop event after resuming


@dataclass(frozen=True)
class BreakOutcome:
    drops: int
    hits: int
    refused: tuple[Decision, ...]
    armed: bool
    cleanup: CleanupReport | None
    interrupted: bool

    @property
    def exit_status(self) -> int:
        """0: stopped as asked; 3: the guard refused and nothing stopped; 4: no stop."""
        if self.hits:
            return 0
        if self.refused:
            return 3
        return 0 if self.interrupted else 4


def resolve_target(cfg: BreakConfig, progress: Callable[[str], None]) -> Target:
    """The gdb side: a lab's target, or an endpoint given by hand."""
    if cfg.gdb is not None:
        if cfg.kallsyms is None and cfg.vmlinux is None:
            raise BadInput("--gdb needs --vmlinux (or --kallsyms) for the target's symbols")
        return from_endpoint(cfg.gdb, kallsyms=cfg.kallsyms, vmlinux=cfg.vmlinux)
    return from_lab(cfg.lab or "default", vmlinux=cfg.vmlinux, progress=progress)


def drop_lines(cfg: BreakConfig, vmlinux: str | Path | None,
               kallsyms: Callable[[], Kallsyms] | None,
               progress: Callable[[str], None]) -> DropLines | None:
    """file:line for the target's drops, added here on the host: from its vmlinux and,
    for a lab, its modules' debug files (the vmlinux checked against the guest's
    /proc/version). None, said once, when there is no vmlinux or it does not fit."""
    if vmlinux is None or kallsyms is None:
        return None
    try:
        version = None
        modules = None
        if cfg.events_cmd is None:
            from kdbg.lab import guest

            name = cfg.lab or "default"
            version = (guest.read_fact(name, "/proc/version") or b"").decode() or None
            modules = guest.module_debug(name)
        lines = DropLines(vmlinux, kallsyms, version, modules)
        lines.warm()
        return lines
    except KdbgError as err:
        progress(f"no file:line: {err}")
        return None


def _lab_symbols(cfg: BreakConfig) -> tuple[str | None, Callable[[], Kallsyms] | None]:
    """Without --break: the vmlinux (given, or the lab's if already fetched) and kallsyms."""
    if cfg.events_cmd is not None:
        ks = cfg.kallsyms
        return cfg.vmlinux, (lambda: Kallsyms.load(ks)) if ks else None
    from kdbg.lab import guest, vm

    name = cfg.lab or "default"
    info = vm.require(name)
    return cfg.vmlinux or info.vmlinux, lambda: Kallsyms.parse(guest.kallsyms(name))


def _source(cfg: BreakConfig, watch: WatchConfig, *, stacks: bool = False
            ) -> CommandSource | LabSource:
    if cfg.events_cmd is not None:
        return CommandSource(cfg.events_cmd)
    opts = remote_options(watch)
    if stacks and "--stack" not in opts:
        opts.append("--stack")  # the stopped skb's ORC stack, for the hit report
    from kdbg.lab import guest

    argv = [*guest.kdbg_argv(), "watch", "--json", *opts]
    return LabSource(cfg.lab or "default", argv)


class _Stop(Exception):
    pass


def connect_cleanup(err: BaseException) -> CleanupReport:
    """The cleanup record of a break-watch interrupted while connecting: what the
    session's abandon did (:meth:`Session.connect` hangs it on the exception), or,
    before gdb started, that the target was never touched."""
    report = getattr(err, "kdbg_cleanup", None)
    if isinstance(report, CleanupReport):
        return report
    return CleanupReport(target_state="running, untouched (interrupted before gdb attached)",
                         steps=["interrupted while connecting"])


def run(watch: WatchConfig, cfg: BreakConfig, sink: BreakSink) -> BreakOutcome:
    """Watch, arm at the first matching drop site, report stops; always clean up."""
    if cfg.events_cmd is not None and cfg.gdb is None:
        raise BadInput("--events-cmd needs --gdb ENDPOINT to reach the same kernel")
    if cfg.break_count < 1:
        raise BadInput("--break-count must be at least 1")
    lines: DropLines | None = None
    try:
        target = resolve_target(cfg, sink.progress)
        # Before gdb holds the target: for a lab this asks the running guest its version.
        ks_path = target.kallsyms
        lines = drop_lines(cfg, target.vmlinux,
                           (lambda: Kallsyms.load(ks_path)) if ks_path else None,
                           sink.progress)
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
        session.set_guard_transport(cfg.transport)
    follower: ModuleFollower | None = None
    source = _source(cfg, watch, stacks=True)
    drops = hits = 0
    refused: list[Decision] = []
    refused_at: set[int] = set()
    bp: Breakpoint | None = None
    site: DropSite | None = None
    last_armed: DropEvent | None = None
    report: CleanupReport | None = None
    signals = StopSignals.install()
    session.gdb.cancel = lambda: bool(signals)  # a slow gdb command gives way to Ctrl-C
    deadline = time.monotonic() + watch.duration if watch.duration else None
    pending: list[Hit] = []
    try:
        session.resume()
        follower = _follow_modules(target)
        sink.progress("starting the tracer in the target")
        stream = source.start()
        early: list[Item] = []
        if not wait_ready(stream, READY_TIMEOUT, on_item=early.append,
                          stop=lambda: bool(signals)):
            raise _Stop
        sink.progress(f"tracer attached; waiting for a matching drop "
                      f"(breaks: {cfg.break_count})")

        def handle(item: Item) -> None:
            nonlocal drops, bp, site, last_armed
            if item.kind == "drop" and item.drop is not None:
                ev = item.drop
                drops += 1

                def show(ev: DropEvent = ev) -> None:
                    sink.drop(lines.annotate(ev) if lines else ev)

                if follower is not None and bp is None and follower.due(session, ev.module):
                    _report_modules(follower.refresh(session), sink)
                if bp is None and ev.address not in refused_at:
                    # Arm first: a first source lookup in a new file takes addr2line
                    # 0.1 s; the drop line is still printed before the verdict.
                    armed = _arm(session, cfg, ev, sink, refused, refused_at, announce=show)
                    if armed is not None:
                        site, bp = armed
                        last_armed = ev
                else:
                    show()
                for h in list(pending):
                    if h.skb is not None and ev.skb == h.skb.address and ev.stack:
                        h.kernel_stack = tuple(str(f) for f in ev.stack)
                        h.cause = ev.cause
                        pending.remove(h)
                        sink.hit(h)
            elif item.kind == "record" and item.record is not None:
                sink.record(item.record)
            elif item.kind == "stderr" and item.text.strip():
                sink.progress(f"target: {item.text}")
            elif item.kind == "end":
                raise _Stop

        for item in early:
            handle(item)
        while not signals:
            if bp is None:
                session.gdb.poll(0)  # hear gdb lose the target even with nothing armed
            if session.lost is not None:
                raise TargetLost(f"the target is gone: {session.lost}")
            now = time.monotonic()
            for h in [h for h in pending if now >= h.deadline]:
                pending.remove(h)
                h.stack_note = (f"the tracer reported no drop of skb 0x{h.skb.address:x} "
                                f"within {HIT_STACK_WAIT:g} s" if h.skb else "no skb read")
                sink.hit(h)
            if hits >= cfg.break_count and not pending:
                break
            if follower is not None and follower.due(session):
                change = follower.refresh(session)
                gone = bp is not None and change.covers_gone(bp.address)
                _report_modules(change, sink, bp if gone else None)
                refused_at = {a for a in refused_at if not change.covers_gone(a)}
                if gone and bp is not None:
                    session.delete(bp)  # its module went: the next drop arms afresh
                    bp = site = None
            if deadline is not None and now >= deadline:
                break
            if watch.count is not None and drops >= watch.count and bp is None:
                break  # --count: nothing armed after N drops (e.g. every site refused)
            with contextlib.suppress(queue.Empty):
                handle(stream.items.get(timeout=0.05 if bp is not None else 0.2))
            if bp is None or hits >= cfg.break_count:
                continue
            try:
                stop = session.wait_stop(0.05)
            except GdbTimeout:
                continue
            hits += 1
            stopped_at = time.monotonic()
            skb = read_skb(session, site.callee) if stop.hit and site is not None else None
            hit = Hit(hits, stop, skb, stopped_at=stopped_at)
            if cfg.interactive:
                if last_armed is not None and last_armed.stack:
                    hit.kernel_stack = tuple(str(f) for f in last_armed.stack)
                    hit.stack_note = "the stack of the drop that armed this breakpoint"
                    hit.cause = last_armed.cause
                sink.hit(hit)
                # gdb's prompt owns the terminal (its Ctrl-C goes to gdb); a signal to
                # kdbg itself ends the handoff through the clean-up below.
                signals.restore()
                report = session.interactive(
                    banner=f"kdbg: stopped at {stop.symbol}+0x{stop.offset:x}; "
                           "'kdbg-done' or 'quit' resumes the target and ends kdbg")
                break
            if hits >= cfg.break_count and bp is not None:
                # Our last stop: take the breakpoint out before the target runs again.
                session.delete(bp)
            session.resume()
            hit.deadline = time.monotonic() + HIT_STACK_WAIT
            pending.append(hit)
    except _Stop:
        if not signals:
            sink.progress(f"the tracer ended: {source.stream.error_summary()}")
    except GdbCancelled:
        pass  # Ctrl-C or SIGTERM: clean up below
    except EventStreamError as err:
        raise KdbgError(str(err)) from err
    finally:
        # The target first: it is released (and the cleanup record written) before the
        # tracer is stopped, so Ctrl-C or SIGTERM ends all of it within 2 s.
        try:
            if report is None:
                report = session.close()
            sink.cleanup(report)
        finally:
            signals.restore()
            for h in pending:  # stopped before the tracer reported the stopped skb
                h.stack_note = "kdbg ended before the tracer reported this skb"
                sink.hit(h)
            try:
                # the hit records are out; the tracer's own summary is not waited for long
                source.stop(wait=TRACER_STOP_WAIT)
            finally:
                if lines is not None:
                    lines.close()
                if follower is not None:
                    follower.close()
    return BreakOutcome(drops, hits, tuple(refused), bp is not None, report,
                        bool(signals))


def _follow_modules(target: Target) -> ModuleFollower | None:
    """For a lab: follow its modules for the whole session (a module loaded after attach
    gets its own names and gdb its debug file; one unloaded is forgotten)."""
    if target.lab is None:
        return None
    from kdbg.lab import guest

    root = guest.module_debug(target.lab) if target.vmlinux is not None else None
    return ModuleFollower(target.lab, root, target.modules)


def _report_modules(change: ModuleChange, sink: BreakSink,
                    removed: Breakpoint | None = None) -> None:
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


def _arm(session: Session, cfg: BreakConfig, ev: DropEvent, sink: BreakSink,
         refused: list[Decision], refused_at: set[int],
         announce: Callable[[], None] = lambda: None) -> tuple[DropSite, Breakpoint] | None:
    """Guard, then break on the drop call at ``ev``'s location; None if refused.
    ``announce`` (the drop's own line) runs before the outcome is reported, whatever
    it is."""
    stack = tuple(f.address for f in ev.stack) if ev.stack else ()
    t0 = time.monotonic()
    try:
        site, bp = session.break_drop_site(ev.address, hw=cfg.hw, force=cfg.force, stack=stack)
    except BreakpointRefused as err:
        announce()
        refused_at.add(ev.address)
        if err.decision is not None:
            refused.append(err.decision)
            sink.refused(err.decision, ev)
        return None
    except NotADropSite as err:
        announce()
        refused_at.add(ev.address)
        sink.progress(f"not arming at {ev.location}: {err}")
        return None
    except BaseException:
        announce()
        raise
    took = time.monotonic() - t0
    announce()
    sink.armed(site, bp, ev, took)
    return site, bp


__all__ = ["BreakConfig", "BreakOutcome", "BreakSink", "EventStream", "run"]


def relay(watch: WatchConfig, cfg: BreakConfig, sink: BreakSink) -> int:
    """Without ``--break``: show the target's drops here (lab or ``--events-cmd``).

    Returns the remote tracer's exit status (0 when stopped with Ctrl-C).
    """
    source = _source(cfg, watch)
    lines = drop_lines(cfg, *_lab_symbols(cfg), sink.progress)
    signals = StopSignals.install()
    status: int | None = None
    drops = 0
    deadline = time.monotonic() + watch.duration if watch.duration else None
    try:
        stream = source.start()
        while not signals:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if watch.count is not None and drops >= watch.count:
                break
            try:
                item = stream.items.get(timeout=0.2)
            except queue.Empty:
                continue
            if item.kind == "drop" and item.drop is not None:
                drops += 1
                sink.drop(lines.annotate(item.drop) if lines else item.drop)
            elif item.kind == "record" and item.record is not None:
                sink.record(item.record)
            elif item.kind in ("ready", "stderr") and item.text.strip():
                sink.progress(item.text.removeprefix("kdbg: "))
            elif item.kind == "end":
                status = item.status
                break
    finally:
        signals.restore()
        source.stop()
        if lines is not None:
            lines.close()
    if status is None:
        return 0
    return status
