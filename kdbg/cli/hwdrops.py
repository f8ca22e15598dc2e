"""``kdbg watch --hw``: hardware drops from devlink traps (called by kdbg.cli.watch)."""

from __future__ import annotations

import sys

import click

from kdbg import hwdrops
from kdbg.cli.options import exclude

# With --hw only these options of kdbg watch mean anything.
HW_OPTIONS = frozenset({"hw", "as_json", "print_bpf", "count", "duration"})


def watch_hw(ctx: click.Context, as_json: bool, print_bpf: bool) -> None:
    """Refuse the skb:kfree_skb options, then stream hardware drops."""
    defaults = {p.name for p in ctx.command.params if p.name not in HW_OPTIONS}
    exclude(ctx, {name: ("hw",) for name in sorted(n for n in defaults if n)},
            why="hardware drops come from devlink, not skb:kfree_skb")
    cfg = hwdrops.HwConfig(count=ctx.params.get("count"), duration=ctx.params.get("duration"))
    if print_bpf:
        click.echo(hwdrops.prepare(cfg))
        return
    sink = (hwdrops.HwJsonSink if as_json else hwdrops.HwTextSink)(sys.stdout, sys.stderr)
    hwdrops.watch(cfg, sink)
