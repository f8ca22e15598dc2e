"""``kdbg watch --bpf``: drops decided by XDP and tc programs (called by kdbg.cli.watch)."""

from __future__ import annotations

import sys

import click

from kdbg import drops
from kdbg.cli.options import exclude, filters_from
from kdbg.trace.filters import FILTER_FIELDS

# With --bpf only these options of kdbg watch mean anything.
BPF_OPTIONS = frozenset({"bpf", "progs", "as_json", "print_bpf", "count", "duration",
                         *FILTER_FIELDS}) - {"reasons", "locations"}


def watch_bpf(ctx: click.Context, as_json: bool, print_bpf: bool) -> None:
    """Refuse the skb:kfree_skb options, then report XDP and tc programs' dropping verdicts."""
    others = {p.name for p in ctx.command.params if p.name not in BPF_OPTIONS}
    exclude(ctx, {name: ("bpf",) for name in sorted(n for n in others if n)},
            why="BPF verdicts come from fexit on the programs, not skb:kfree_skb")
    params = dict(ctx.params)
    cfg = drops.BpfWatchConfig(filters=filters_from(params), progs=tuple(params["progs"]),
                               count=params.get("count"), duration=params.get("duration"))
    if print_bpf:
        click.echo(drops.prepare_bpf(cfg))
        return
    sink = (drops.JsonSink if as_json else drops.TextSink)(sys.stdout, sys.stderr)
    drops.watch_bpf(cfg, sink)
