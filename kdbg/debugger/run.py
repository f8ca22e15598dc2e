"""The two things ``kdbg gdb`` does, as library calls: break-and-wait, and attach.

Each takes a small request, runs one :class:`Session` from connect to cleanup, and
returns what happened; the CLI only renders it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kdbg.debugger.model import Breakpoint, CleanupReport, DropSite, Stop
from kdbg.debugger.session import Session
from kdbg.debugger.targets import Target


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
) -> BreakResult:
    """Connect, set the breakpoint (through the guard), resume, wait for the hit.

    Raises GdbTimeout when nothing hits within ``req.timeout``; the session is cleaned
    up either way. With ``interactive`` the user gets gdb's prompt at the hit first.
    """
    with open_session(req.target, timeout=req.connect_timeout) as s:
        site = None
        if req.drop_site:
            addr, _ = s.resolve(req.where)
            site, bp = s.break_drop_site(addr, hw=req.hw, force=req.force)
        else:
            bp = s.break_at(req.where, hw=req.hw, force=req.force)
        s.resume()
        if on_armed is not None:
            on_armed(bp, site)
        stop = s.wait_stop(req.timeout)
        report = s.interactive(banner=render_stop(stop) + "\n") if req.interactive else s.close()
    return BreakResult(bp, site, stop, report)


def attach(target: Target, *, connect_timeout: float = 30.0) -> CleanupReport:
    """Connect and hand the user gdb's prompt on the stopped target; clean up after."""
    with open_session(target, timeout=connect_timeout) as s:
        return s.interactive(banner=f"kdbg: attached to {target.label or target.endpoint}\n")


def open_session(target: Target, *, timeout: float = 30.0,
                 progress: Callable[[str], None] | None = None) -> Session:
    """:meth:`Session.connect` with everything ``target`` knows, modules' debug files
    included (loaded while the target is stopped at attach; ``progress`` hears which)."""
    session = Session.connect(
        target.endpoint,
        kallsyms=target.kallsyms,
        vmlinux=target.vmlinux,
        kaslr_offset=target.kaslr_offset,
        gdb_prefix=target.gdb_prefix,
        interrupter=target.interrupter,
        timeout=timeout,
        target_symbols=target.guard_symbols(),
    )
    if target.modules:
        try:
            loaded = session.load_modules(target.modules)
        except BaseException:
            session.close()
            raise
        if loaded and progress is not None:
            more = ", ..." if len(loaded) > 4 else ""
            progress(f"gdb has the debug files of {len(loaded)} modules "
                     f"({', '.join(loaded[:4])}{more})")
    return session


def render_stop(stop: Stop) -> str:
    """The hit as text: a headline, then one line per trusted frame."""
    where = f"{stop.symbol}+0x{stop.offset:x}" if stop.symbol else "??"
    head = (
        f"hit: breakpoint {stop.breakpoint} at {where} (0x{stop.address:x})"
        if stop.hit
        else f"stopped ({stop.reason}) at {where} (0x{stop.address:x})"
    )
    lines = [head, *(str(f) for f in stop.backtrace)]
    if stop.truncated:
        lines.append(f"(backtrace ends: {stop.truncated})")
    return "\n".join(lines)
