"""``kdbg watch --bpf``: drops decided by XDP and tc programs (called by kdbg.cli.watch)."""

from __future__ import annotations

import sys

import click

from kdbg import drops
from kdbg.cli.options import exclude, filters_from, require
from kdbg.trace.filters import FILTER_FIELDS

# With --bpf only these options of kdbg watch mean anything.
BPF_OPTIONS = frozenset({"bpf", "progs", "as_json", "print_bpf", "count", "duration",
                         "stats", "interval", *FILTER_FIELDS}) - {"reasons", "locations"}
# and these with --break (the tracer in the target, gdb here)
BREAK_OPTIONS = frozenset({"do_break", "lab", "events_cmd", "gdb_endpoint", "vmlinux",
                           "kallsyms_path", "no_source", "transport", "force", "hw_break",
                           "break_count"})


def watch_bpf(ctx: click.Context, as_json: bool, print_bpf: bool) -> None:
    """Refuse the skb:kfree_skb options, then report XDP and tc programs' dropping verdicts."""
    others = {p.name for p in ctx.command.params
              if p.name not in BPF_OPTIONS | BREAK_OPTIONS}
    exclude(ctx, {name: ("bpf",) for name in sorted(n for n in others if n)},
            why="BPF verdicts come from fexit on the programs, not skb:kfree_skb")
    params = dict(ctx.params)
    if not params.get("do_break"):
        require(ctx, {name: ("do_break",) for name in sorted(BREAK_OPTIONS - {"do_break"})})
    cfg = drops.BpfWatchConfig(filters=filters_from(params), progs=tuple(params["progs"]),
                               count=params.get("count"), duration=params.get("duration"),
                               stats=bool(params.get("stats")),
                               interval=params.get("interval"))
    if params.get("do_break"):
        from kdbg.cli.breakwatch import break_bpf  # the debugger and the lab: see watch.py

        break_bpf(cfg, as_json, lab=params.get("lab"), events_cmd=params.get("events_cmd"),
                  gdb=params.get("gdb_endpoint"), vmlinux=params.get("vmlinux"),
                  kallsyms=params.get("kallsyms_path"),
                  want_source=not params.get("no_source"), transport=params.get("transport"),
                  force=bool(params.get("force")), hw_break=bool(params.get("hw_break")),
                  break_count=params.get("break_count") or 1)
    if print_bpf:
        click.echo(drops.prepare_bpf(cfg))
        return
    sink = (drops.JsonSink if as_json else drops.TextSink)(sys.stdout, sys.stderr)
    drops.watch_bpf(cfg, sink)
