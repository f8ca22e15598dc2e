"""A target's drops shown here: file:line added on the host, and ``kdbg watch --lab``
or ``--events-cmd`` without ``--break`` (the tracer runs in the target)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

from kdbg.breakwatch.model import BreakConfig, BreakSink
from kdbg.breakwatch.sources import source_for
from kdbg.drops.watch import WatchConfig
from kdbg.errors import KdbgError
from kdbg.signals import StopSignals
from kdbg.symbols.droplines import DropLines
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.targetfacts import LabFacts


def drop_lines(vmlinux: str | Path | None, kallsyms: Callable[[], Kallsyms] | None,
               facts: LabFacts | None, progress: Callable[[str], None]) -> DropLines | None:
    """file:line for the target's drops, added here on the host: from its vmlinux and,
    for a lab (``facts``), its modules' debug files (the vmlinux checked against the
    guest's /proc/version). None, said once, when there is no vmlinux or it does not
    fit."""
    if vmlinux is None or kallsyms is None:
        return None
    try:
        version = facts.version() if facts is not None else None
        modules = facts.debug_root() if facts is not None else None
        lines = DropLines(vmlinux, kallsyms, version, modules)
        lines.warm()
        return lines
    except KdbgError as err:
        progress(f"no file:line: {err}")
        return None


def _lines(cfg: BreakConfig, progress: Callable[[str], None]) -> DropLines | None:
    """Without --break: the vmlinux (given, or the lab's if already fetched) and kallsyms."""
    if cfg.events_cmd is not None:
        ks = cfg.kallsyms
        return drop_lines(cfg.vmlinux, (lambda: Kallsyms.load(ks)) if ks else None, None,
                          progress)
    from kdbg.lab import registry

    name = cfg.lab or "default"
    vmlinux = cfg.vmlinux or registry.require(name).vmlinux
    if vmlinux is None:
        return None
    try:
        facts = LabFacts(name)
    except KdbgError as err:
        progress(f"no file:line: {err}")
        return None
    return drop_lines(vmlinux, facts.kallsyms, facts, progress)


def watch_remote(watch: WatchConfig, cfg: BreakConfig, sink: BreakSink) -> int:
    """Without ``--break``: show the target's drops here (lab or ``--events-cmd``).

    Returns the remote tracer's exit status (0 when stopped with Ctrl-C).
    """
    source = source_for(cfg, watch)
    lines = _lines(cfg, sink.progress)
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
