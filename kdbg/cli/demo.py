"""``kdbg demo``: kdbg's main job on a known workload."""

from __future__ import annotations

import sys

import click

from kdbg import demo as demo_mod
from kdbg.report import JsonSink, TextSink


def _progress(message: str) -> None:
    click.echo(f"kdbg demo: {message}", err=True)


@click.command(epilog="\b\nExamples:\n  kdbg demo\n  kdbg demo --stack\n  kdbg demo --json")
@click.option("--stack", is_flag=True, help="Show the kernel stack of each drop.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of text.")
def demo(stack: bool, as_json: bool) -> None:
    """Make 23 real packet drops in throw-away namespaces and watch kdbg name them.

    Needs root. Creates two network namespaces and a veth pair, adds an
    iptables DROP rule, sends 23 UDP datagrams into it, and removes it all.
    Exits 1 if kdbg did not see exactly the drops it made.
    """
    sink = JsonSink(sys.stdout, sys.stderr) if as_json else TextSink(
        sys.stdout, sys.stderr, stats=True)
    res = demo_mod.run_local(sink, _progress, stack=stack)
    got = res.result.summary.matched
    if got != res.expected:
        _progress(f"expected {res.expected} drops, kdbg counted {got}")
        sys.exit(1)
    _progress(f"ok: {got} of {res.expected} drops seen, named and counted in the kernel")


COMMANDS = [demo]
