"""A target's drops shown here: file:line added on the host, and ``kdbg watch --lab``
or ``--events-cmd`` without ``--break`` (the tracer runs in the target)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdbg.breakwatch.model import BreakConfig, BreakSink
from kdbg.breakwatch.remoteloop import RemoteLoop
from kdbg.breakwatch.sources import Item, source_for
from kdbg.drops.watch import WatchConfig
from kdbg.errors import KdbgError
from kdbg.lab import registry
from kdbg.signals import StopSignals
from kdbg.symbols.droplines import DropLines
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.targetfacts import LabFacts
from kdbg.trace.event import DropEvent


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


class _ShowLoop(RemoteLoop):
    """Without --break: each drop shown here (with file:line when ``lines``), the other
    records passed on, the tracer's words as progress, its exit status kept."""

    def __init__(self, watch: WatchConfig, sink: BreakSink, lines: DropLines | None) -> None:
        super().__init__(watch)
        self.sink, self.lines = sink, lines
        self.status: int | None = None

    def on_drop(self, event: DropEvent) -> None:
        self.sink.drop(self.lines.annotate(event) if self.lines else event)

    def on_record(self, record: dict[str, Any]) -> None:
        self.sink.record(record)

    def on_text(self, item: Item) -> None:
        self.sink.progress(item.text.removeprefix("kdbg: "))

    def on_end(self, status: int | None) -> bool:
        self.status = status
        return False


def watch_remote(watch: WatchConfig, cfg: BreakConfig, sink: BreakSink) -> int:
    """Without ``--break``: show the target's drops here (lab or ``--events-cmd``).

    Returns the remote tracer's exit status (0 when stopped with Ctrl-C).
    """
    source = source_for(cfg, watch)
    lines = _lines(cfg, sink.progress)
    signals = StopSignals.install()
    loop = _ShowLoop(watch, sink, lines)
    try:
        loop.read(source.start(), signals)
    finally:
        signals.restore()
        source.stop()
        if lines is not None:
            lines.close()
    if loop.status is None:
        return 0
    return loop.status
