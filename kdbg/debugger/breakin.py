"""Getting back a KGDBoE target whose debugger died.

When gdb goes away without detaching (killed, a laptop lid, a dropped ssh) while the
target runs, kgdb still counts a debugger as attached and KGDBoE answers no gdb packet
until the kernel stops again: a fresh gdb waits out its whole timeout. KGDBoE's receive
handler still honours the break-in byte (0x03, what gdb's Ctrl-C sends).

So a session on a ``udp:`` stub first runs a :class:`Probe` (:mod:`kgdbprobe`, a child
started from where gdb runs, while gdb loads its symbols): it asks the stub, sends the
break-in byte if nothing answers, and leaves kgdb waiting for gdb's first packet. The
attach then goes as on a live stub. The byte must come *before* gdb's attach: KGDBoE
answers the sender of the last datagram, and gdb's first packets wait in its buffer.

kgdboc has no such byte on the wire that a running kernel reads: the session's
interrupter sends SysRq-G when kgdb has not answered within :data:`ANSWER_WITHIN` s.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kdbg.debugger import kgdbprobe
from kdbg.debugger.endpoint import Endpoint
from kdbg.lifetime import die_with_parent

ANSWER_WITHIN = 4.0  # s: a live kgdb answered an attach in 1.2-1.7 s in the lab
PROBE_SCRIPT = Path(kgdbprobe.__file__)
# the probe's longest path: its start under a prefix, the question, the break-in
PROBE_WITHIN = kgdbprobe.ANSWER_WITHIN + kgdbprobe.STOP_WITHIN + 3.0
BROKE_IN = ("the target was running with no debugger attached (a debugger died?); "
            "stopped it with a break-in (0x03)")
SYSRQ_G = ("kgdb did not answer (the target was running): stopped it with SysRq-G "
           "through the lab's exec channel")


def _argv(ep: Endpoint, prefix: Sequence[str], *extra: str) -> list[str]:
    return [*prefix, sys.executable, str(PROBE_SCRIPT), ep.host, str(ep.port), *extra]


def nudge(ep: Endpoint, prefix: Sequence[str] = ()) -> None:
    """Send the break-in byte to a ``udp:`` endpoint, from under ``prefix`` (``ip netns
    exec NS`` for a lab) when there is one. Best effort: errors are left to the attach."""
    if not prefix:
        with contextlib.suppress(OSError):
            kgdbprobe.nudge(ep.host, ep.port)
        return
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(_argv(ep, prefix, "--nudge"), capture_output=True, timeout=15,
                       stdin=subprocess.DEVNULL)


class Probe:
    """:mod:`kgdbprobe` against ``ep``, running as a child from under ``prefix``."""

    def __init__(self, ep: Endpoint, prefix: Sequence[str] = ()) -> None:
        self.outcome: str | None = None  # answered, broke-in, silent; None: not known
        self.proc = subprocess.Popen(
            _argv(ep, prefix), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, preexec_fn=die_with_parent)

    def result(self, timeout: float = PROBE_WITHIN) -> str | None:
        """The probe's word, waiting up to ``timeout`` s; None when it did not say."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return None
        words = out.split()
        self.outcome = words[0] if words and words[0] in kgdbprobe.RESULTS else None
        return self.outcome

    def stop(self) -> None:
        """Stop the probe (by its PID) if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    @property
    def may_have_stopped(self) -> bool:
        """Whether the target may be stopped by the probe, with nobody attached."""
        return self.outcome != "silent"
