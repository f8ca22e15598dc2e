"""``kdbg demo``: kdbg's main job on a known workload."""

from __future__ import annotations

import sys

import click

from kdbg.breakwatch.report import BreakJsonSink, BreakTextSink
from kdbg.cli.options import exclude
from kdbg.demo import scenario as demo_mod
from kdbg.drops import JsonSink, TextSink


def _progress(message: str) -> None:
    click.echo(f"kdbg demo: {message}", err=True)


@click.command(epilog="\b\nExamples:\n  kdbg demo                 the lab: drops, breakpoint, hit, "
               "backtrace\n  kdbg demo --interactive   ... and gdb's prompt at the hit\n"
               "  kdbg demo --local         drops on this machine's kernel, no VM\n"
               "  kdbg demo --local --json")
@click.option("--local", is_flag=True,
              help="Watch this machine's kernel in throw-away namespaces instead of the lab.")
@click.option("--interactive", is_flag=True, help="Lab demo: hand over gdb's prompt at the hit.")
@click.option("--keep", is_flag=True, help="Lab demo: leave the lab running afterwards.")
@click.option("--stack", is_flag=True, help="Show the kernel stack of each drop.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of text.")
def demo(local: bool, interactive: bool, keep: bool, stack: bool, as_json: bool) -> None:
    """Make real packet drops and watch kdbg name them, then stop the kernel at one.

    The default runs in the lab: it boots lab 'demo' (Debian's stock kernel under
    QEMU with its gdb stub), adds an iptables DROP rule in the guest, sends a
    datagram a second into it, runs 'kdbg watch --break', shows the drops, the
    breakpoint armed at the drop site and the hit with its backtrace, resumes the
    guest, and stops the lab. --local makes 23 drops in namespaces on this
    machine instead. Needs root. Exits 1 if the demo did not see what it made.
    """
    exclude(click.get_current_context(), {"interactive": ("local",), "keep": ("local",)},
            why="they are for the lab demo")
    if local:
        sink = JsonSink(sys.stdout, sys.stderr) if as_json else TextSink(sys.stdout, sys.stderr)
        res = demo_mod.run_local(sink, _progress, stack=stack)
        got = res.result.summary.matched
        if got != res.expected:
            _progress(f"expected {res.expected} drops, kdbg counted {got}")
            sys.exit(1)
        _progress(f"ok: {got} of {res.expected} drops seen, named and counted in the kernel")
        return
    bsink = BreakJsonSink(sys.stdout, sys.stderr) if as_json else BreakTextSink(
        sys.stdout, sys.stderr, stacks=stack)
    result = demo_mod.run_lab(bsink, _progress, keep=keep, interactive=interactive)
    if result.outcome.hits < 1:
        _progress("the breakpoint was never hit")
        sys.exit(1)
    _progress(f"ok: {result.outcome.drops} drops seen; the kernel stopped at the drop site "
              f"and runs again")


COMMANDS = [demo]
