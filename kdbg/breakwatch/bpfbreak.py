"""``kdbg watch --bpf --break``: the kernel stopped inside the JITed BPF program whose
verdict dropped a packet.

The tracer in the target is ``kdbg watch --bpf --json`` (fexit on each XDP and tc
program, :mod:`kdbg.drops.bpfwatch`); its records carry the program's JITed functions
and the JITed address of each verdict line (the program's ``jited_line_info``). The
break-watch is :class:`~kdbg.breakwatch.watch.BreakWatch`'s, with three hooks changed:

* where to break (:meth:`BpfBreakWatch.place`): gdb is first given the program's
  functions as symbols (a synthetic symbol file, deleted at the end), the guard and the
  frame names learn its JITed image; then the breakpoint goes through the guard like any
  other, at :meth:`~kdbg.trace.bpfverdict.BpfProg.break_site`: the JITed start of the one
  line that returns the verdict, or the program's entry when fexit left several
  candidate lines, or none;
* what is read at the stop (:meth:`BpfBreakWatch.read_stop`): no skb (an XDP program
  runs before there is one), so the hit is not reported at the stop;
* what completes the stop's report (:meth:`BpfBreakWatch.finish_hit`): the program's
  next verdict record, the packet that stopped returning its verdict once resumed; none
  within :data:`VERDICT_WAIT` s means the stopped packet did not drop (the line may run
  before the branch that decides).
"""

from __future__ import annotations

from collections.abc import Callable

from kdbg.breakwatch.model import BreakConfig, BreakOutcome, BreakSink, Hit
from kdbg.breakwatch.sources import CommandSource, LabSource, Source
from kdbg.breakwatch.watch import BreakWatch, follower, start
from kdbg.debugger import NotADropSite, Session
from kdbg.debugger.livemodules import ModuleFollower
from kdbg.debugger.model import Breakpoint, DropSite, Stop
from kdbg.debugger.skb import SkbInfo
from kdbg.drops import BpfWatchConfig, WatchConfig, guest_bpf_argv
from kdbg.symbols import bpfjit
from kdbg.trace.event import DropEvent

VERDICT_WAIT = 5.0  # s after resuming for the stopped packet's verdict record (TCG is slow)


class BpfBreakWatch(BreakWatch):
    """A break-watch over BPF verdicts (see the module's docstring)."""

    def __init__(self, watch: WatchConfig, cfg: BreakConfig, sink: BreakSink,
                 session: Session, source: Source, *,
                 follow: Callable[[], ModuleFollower | None] = lambda: None) -> None:
        super().__init__(watch, cfg, sink, session, source, follow=follow)
        self.hit_wait = VERDICT_WAIT
        self.symbols_of: set[int] = set()  # programs whose JITed symbols gdb has

    def place(self, ev: DropEvent, stack: tuple[int, ...]) -> tuple[DropSite, Breakpoint]:
        prog = ev.prog
        where = prog.break_site() if prog is not None else None
        if prog is None or where is None:
            raise NotADropSite(f"{ev.location}: the record names no JITed program image",
                               hint="the kernel hides JITed addresses from the tracer "
                                    "(kptr_restrict), or the program is not JITed")
        if prog.id not in self.symbols_of:
            self.session.add_jited(
                bpfjit.images(prog.id, prog.kind, prog.ksym, prog.jited),
                [bpfjit.JitedLine(a, f, n) for a, f, n in prog.jited_lines])
            self.symbols_of.add(prog.id)
        address, what = where
        bp = self.session.run.break_at(address, hw=self.cfg.hw_break, force=self.cfg.force)
        return DropSite(ev.address, address, 0, ev.reason, bp.label, what), bp

    reports_at_stop = False  # the hit is reported with the verdict that followed it

    def read_stop(self, stop: Stop) -> tuple[SkbInfo | None, str | None]:
        return None, None

    def finish_hit(self, hit: Hit) -> None:
        self.sink.hit(hit)

    def on_drop(self, ev: DropEvent) -> None:
        super().on_drop(ev)
        armed = self.last_armed.prog if self.last_armed is not None else None
        for h in self.pending:
            if (h.verdict is None and armed is not None and ev.prog is not None
                    and ev.prog.id == armed.id and self.arrived >= h.resumed_at):
                h.verdict = ev
                self.pending.remove(h)
                self.sink.hit(h)
                break

    def unmatched(self, hit: Hit) -> str:
        armed = self.last_armed
        what = f"{armed.reason} of program {armed.prog.id}" if armed and armed.prog else "verdict"
        return (f"no {what} reported within {self.hit_wait:g} s of resuming: the stopped "
                "packet did not drop there (the line runs before the branch that decides)")


def source(cfg: BreakConfig, bpf: BpfWatchConfig) -> Source:
    """``--events-cmd``, else ``kdbg watch --bpf --json`` in the lab guest."""
    if cfg.events_cmd is not None:
        return CommandSource(cfg.events_cmd)
    return LabSource(cfg.lab or "default", guest_bpf_argv(bpf))


def run(bpf: BpfWatchConfig, cfg: BreakConfig, sink: BreakSink) -> BreakOutcome:
    """Watch the target's BPF verdicts, arm in the first matching program, report stops;
    always clean up."""
    watch = WatchConfig(count=bpf.count, duration=bpf.duration)
    src = source(cfg, bpf)
    return start(cfg, sink, lambda session, target, _lines: BpfBreakWatch(
        watch, cfg, sink, session, src, follow=lambda: follower(target)), drop_lines=False)
