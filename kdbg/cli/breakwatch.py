"""``kdbg watch --break`` (and ``--lab``, ``--events-cmd``): drops from a tracer running
elsewhere, and the kernel stopped at one; its own module, so that a plain ``kdbg watch``
starts without importing the debugger and the lab."""

from __future__ import annotations

import sys
from typing import Any

from kdbg import breakwatch
from kdbg.breakwatch import bpfbreak
from kdbg.breakwatch.report import BreakJsonSink, BreakTextSink
from kdbg.drops import BpfWatchConfig, WatchConfig


def break_watch(cfg: WatchConfig, as_json: bool, *, do_break: bool, **opts: Any) -> None:
    """Run the break-watch (or, without ``do_break``, show the remote tracer's drops)
    and exit with its status; ``opts`` are :class:`kdbg.breakwatch.BreakConfig`'s."""
    bcfg = breakwatch.BreakConfig(**opts)
    bsink = BreakJsonSink(sys.stdout, sys.stderr) if as_json else BreakTextSink(
        sys.stdout, sys.stderr, stacks=cfg.stack)
    if not do_break:
        sys.exit(breakwatch.watch_remote(cfg, bcfg, bsink))
    outcome = breakwatch.run(cfg, bcfg, bsink)
    sys.exit(outcome.exit_status)


def break_bpf(cfg: BpfWatchConfig, as_json: bool, **opts: Any) -> None:
    """``kdbg watch --bpf --break``: stop in the JITed program at its verdict; exit with
    the outcome's status. ``opts`` are :class:`kdbg.breakwatch.BreakConfig`'s."""
    bcfg = breakwatch.BreakConfig(**opts)
    bsink = BreakJsonSink(sys.stdout, sys.stderr) if as_json else BreakTextSink(
        sys.stdout, sys.stderr)
    sys.exit(bpfbreak.run(cfg, bcfg, bsink).exit_status)
