"""The two things ``kdbg gdb`` does, as library calls: break-and-wait, and attach.

Each takes a small request, runs one :class:`Session` from connect to cleanup, and
returns what happened; the CLI only renders it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kdbg.debugger import leftovers
from kdbg.debugger.attach import Target
from kdbg.debugger.livemodules import ModuleFollower
from kdbg.debugger.model import Breakpoint, CleanupReport, DropSite, Stop
from kdbg.debugger.session import Session
from kdbg.errors import GdbTimeout, KdbgError


@dataclass(frozen=True)
class BreakRequest:
    """``where`` is SYM, SYM+0xOFF or 0xADDR; with ``drop_site`` it is a drop location
    (the tracer's return address) and kdbg breaks on the call before it."""

    where: str
    target: Target
    hw: bool = False
    force: bool = False
    drop_site: bool = False
    timeout: float = 60.0
    connect_timeout: float = 30.0
    interactive: bool = False


@dataclass(frozen=True)
class BreakResult:
    breakpoint: Breakpoint
    site: DropSite | None
    stop: Stop
    cleanup: CleanupReport


def break_and_wait(
    req: BreakRequest,
    *,
    on_armed: Callable[[Breakpoint, DropSite | None], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BreakResult:
    """Connect, set the breakpoint (through the guard), resume, wait for the hit.

    Raises GdbTimeout when nothing hits within ``req.timeout``; the session is cleaned
    up either way. With ``interactive`` the user gets gdb's prompt at the hit first.
    """
    with open_session(req.target, timeout=req.connect_timeout, progress=progress) as s:
        site = None
        if req.drop_site:
            addr, _ = s.run.resolve(req.where)
            site, bp = s.run.break_drop_site(addr, hw=req.hw, force=req.force)
        else:
            bp = s.run.break_at(req.where, hw=req.hw, force=req.force)
        s.run.resume()
        if on_armed is not None:
            on_armed(bp, site)
        stop = _wait_following(s, req.target, req.timeout, progress)
        report = (s.interactive(banner=render_stop(stop) + "\n", stop=_prompt_facts(stop, site))
                  if req.interactive else s.close())
    return BreakResult(bp, site, stop, report)


def _prompt_facts(stop: Stop, site: DropSite | None) -> dict[str, object]:
    """What the prompt's commands are told of a ``kdbg gdb break`` stop."""
    return {"stop": {"address": f"0x{stop.address:x}",
                     "label": f"{stop.symbol}+0x{stop.offset:x}" if stop.symbol else None,
                     "callee": site.callee if site else None}}


def _wait_following(s: Session, target: Target, timeout: float,
                    progress: Callable[[str], None] | None) -> Stop:
    """:meth:`RunControl.wait_stop`, following a lab's modules while the target runs, so
    the stop's frames are named from the module list of that moment."""
    if target.facts is None:
        return s.run.wait_stop(timeout)
    follower = ModuleFollower(target.facts, target.debug_root(), target.modules)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return s.run.wait_stop(max(0.0, min(1.0, deadline - time.monotonic())))
            except GdbTimeout:
                if time.monotonic() >= deadline:
                    raise
            if follower.due(s):
                change = follower.refresh(s)
                if change and progress is not None:
                    progress(f"the target's modules changed: {change.describe()}")
    finally:
        follower.close()


def attach(target: Target, *, connect_timeout: float = 30.0,
           progress: Callable[[str], None] | None = None) -> CleanupReport:
    """Connect and hand the user gdb's prompt on the stopped target; clean up after."""
    with open_session(target, timeout=connect_timeout, progress=progress) as s:
        return s.interactive(banner=f"kdbg: attached to {target.label or target.endpoint}\n")


def open_session(target: Target, *, timeout: float = 30.0,
                 progress: Callable[[str], None] | None = None) -> Session:
    """:meth:`Session.connect` with everything ``target`` knows, modules' debug files
    included (loaded while the target is stopped at attach; ``progress`` hears which)."""
    session = Session.connect(  # a lab's kallsyms: the table its facts already hold
        target.endpoint, kallsyms=target.facts.kallsyms() if target.facts else target.kallsyms,
        kallsyms_file=target.kallsyms, vmlinux=target.vmlinux,
        kaslr_offset=target.kaslr_offset, gdb_prefix=target.gdb_prefix,
        interrupter=target.interrupter, timeout=timeout,
        target_symbols=target.guard_symbols(), tree=target.tree,
        module_roots=(root,) if (root := target.debug_root()) is not None else ())
    if session.state.attach_note and progress is not None:
        progress(session.state.attach_note)
    if progress is not None:
        for note in session.state.notes:
            progress(note)
    if target.stopped and progress is not None:
        progress(f"{target.label or target.endpoint}: the guest was already stopped (halted "
                 "by a debugger that is gone); kdbg used the facts it kept and resumes the "
                 "guest when it ends")
    _clear_leftovers(session, progress)
    if target.modules:
        try:
            loaded = session.inspect.load_modules(target.modules)
        except BaseException:
            session.close()
            raise
        if loaded and progress is not None:
            more = ", ..." if len(loaded) > 4 else ""
            progress(f"gdb has the debug files of {len(loaded)} modules "
                     f"({', '.join(loaded[:4])}{more})")
    return session


def _clear_leftovers(session: Session, progress: Callable[[str], None] | None) -> None:
    """kgdb targets: take out the breakpoints a dead session left (and say which)."""
    say = progress or (lambda _: None)
    try:
        removed, left = leftovers.clear(session)
    except KdbgError as err:
        say(f"could not read kgdb's breakpoint table: {err}")
        return
    if removed:
        say(f"removed {len(removed)} breakpoint(s) a dead session left in kgdb: "
            f"{', '.join(removed)}")
    if left:
        say(f"warning: kgdb still holds breakpoints at {', '.join(left)}")


def render_stop(stop: Stop) -> str:
    """The hit as text: a headline, then one line per trusted frame."""
    where = f"{stop.symbol}+0x{stop.offset:x}" if stop.symbol else "??"
    head = (
        f"hit: breakpoint {stop.breakpoint} at {where} (0x{stop.address:x})"
        if stop.hit
        else f"stopped ({stop.reason}) at {where} (0x{stop.address:x})"
    )
    lines = [head]
    for frame in stop.backtrace:
        lines.append(str(frame))
        if frame.text:
            lines.append(f"    {frame.text}")
    if stop.truncated:
        lines.append(f"(backtrace ends: {stop.truncated})")
    return "\n".join(lines)
