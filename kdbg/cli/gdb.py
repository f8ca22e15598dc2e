"""``kdbg gdb attach`` and ``kdbg gdb break``: thin commands over :mod:`kdbg.debugger.run`."""

from __future__ import annotations

import json
from typing import Any

import click

from kdbg.cli.options import exclude, require
from kdbg.debugger import attach, run
from kdbg.debugger.model import Breakpoint, DropSite
from kdbg.errors import BadInput


def _target(lab: str | None, gdb_ep: str | None, vmlinux: str | None,
            kallsyms: str | None, no_vmlinux: bool, source: str | None = None,
            no_source: bool = False) -> attach.Target:
    if lab and gdb_ep:
        raise BadInput("give --lab or --gdb, not both")
    # a lab gives its own kallsyms and source; --no-vmlinux is about the lab's own vmlinux
    ctx = click.get_current_context()
    require(ctx, {"kallsyms": ("gdb_ep",), "source": ("gdb_ep",)})
    exclude(ctx, {"no_vmlinux": ("gdb_ep", "vmlinux"), "no_source": ("gdb_ep",)})
    if gdb_ep:
        return attach.from_endpoint(gdb_ep, kallsyms=kallsyms, vmlinux=vmlinux, source=source)
    target = attach.from_lab(
        lab or "default",
        vmlinux=vmlinux,
        want_vmlinux=not no_vmlinux,
        want_source=not no_source,
        progress=lambda msg: click.echo(f"kdbg: {msg}", err=True),
    )
    return target


def _say(msg: str) -> None:
    click.echo(f"kdbg: {msg}", err=True)


_target_options = [
    click.option("--lab", metavar="NAME", help="a running lab (default: 'default')"),
    click.option("--gdb", "gdb_ep", metavar="ENDPOINT",
                 help="tcp:HOST:PORT or unix:PATH (QEMU stub), serial:HOST:PORT, "
                      "serial:PATH or /dev/ttyS* (kgdboc), udp:HOST:PORT (KGDBoE)"),
    click.option("--vmlinux", type=click.Path(exists=True, dir_okay=False),
                 help="the target's vmlinux with DWARF (file:line, full backtraces)"),
    click.option("--kallsyms", type=click.Path(exists=True, dir_okay=False),
                 help="a copy of the target's /proc/kallsyms (names, and the guard)"),
    click.option("--no-vmlinux", is_flag=True, help="do not load the lab's debug vmlinux"),
    click.option("--source", type=click.Path(exists=True, file_okay=False),
                 help="with --gdb: the kernel's source tree (source lines; Linux's gdb "
                      "helpers from its vmlinux-gdb.py)"),
    click.option("--no-source", is_flag=True,
                 help="no kernel source or Linux gdb helpers (a lab's kernel source is "
                      "fetched once into the cache)"),
]


def target_options(fn: Any) -> Any:
    for opt in reversed(_target_options):
        fn = opt(fn)
    return fn


@click.group("gdb")
def gdb_group() -> None:
    """Drive gdb against the target kernel (QEMU stub, kgdboc or KGDBoE).

    \b
    Examples:
      kdbg gdb attach --lab default
      kdbg gdb break tcp_v4_rcv --lab default --wait --timeout 60
      kdbg gdb break __udp4_lib_rcv+0x5a4 --drop-site --json
      kdbg gdb break kfree_skb_reason --gdb tcp:127.0.0.1:1234 --kallsyms ks.txt
    """


@gdb_group.command("attach")
@target_options
def attach_cmd(lab: str | None, gdb_ep: str | None, vmlinux: str | None,
               kallsyms: str | None, no_vmlinux: bool, source: str | None,
               no_source: bool) -> None:
    """Open gdb's prompt on the target, stopped, with kdbg's helpers loaded.

    'kdbg-done', 'quit' or Ctrl-] returns; kdbg then deletes every breakpoint, resumes
    the target and detaches.

    \b
    Examples:
      kdbg gdb attach --lab default
      kdbg gdb attach --gdb tcp:127.0.0.1:1234 --kallsyms guest-kallsyms.txt
      kdbg gdb attach --gdb udp:10.213.0.2:31337 --vmlinux vmlinux-6.1.0-56-amd64
    """
    report = run.attach(_target(lab, gdb_ep, vmlinux, kallsyms, no_vmlinux, source, no_source),
                        progress=_say)
    click.echo(f"kdbg: {report.message()}", err=True)


@gdb_group.command("break")
@click.argument("where")
@target_options
@click.option("--drop-site", is_flag=True,
              help="WHERE is a drop location (return address): break on the call before it")
@click.option("--hw", is_flag=True, help="a hardware breakpoint")
@click.option("--force", is_flag=True, help="set it even if the safety guard refuses")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="wait for the hit (the breakpoint is deleted when kdbg exits)")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="seconds to wait for the hit")
@click.option("--json", "as_json", is_flag=True, help="print the hit as one JSON line")
@click.option("--interactive", is_flag=True, help="at the hit, hand over gdb's prompt")
def break_cmd(where: str, lab: str | None, gdb_ep: str | None, vmlinux: str | None,
              kallsyms: str | None, no_vmlinux: bool, source: str | None, no_source: bool,
              drop_site: bool, hw: bool,
              force: bool, wait: bool, timeout: float, as_json: bool,
              interactive: bool) -> None:
    """Break at SYMBOL, SYM+0xOFF or 0xADDR, wait for the hit and print its backtrace.

    Every breakpoint passes the safety guard for the transport; when kdbg exits the
    target runs with none of its breakpoints left.

    \b
    Examples:
      kdbg gdb break tcp_v4_rcv --lab default --timeout 60
      kdbg gdb break 0xffffffff818bcae2 --drop-site --lab default --json
      kdbg gdb break kfree_skb_reason --lab default --interactive
      kdbg gdb break do_sys_openat2 --gdb udp:10.213.0.2:31337 --kallsyms ks.txt
    """
    if not wait:
        raise BadInput("kdbg gdb break needs --wait: kdbg deletes its breakpoints on exit")
    req = run.BreakRequest(
        where=where,
        target=_target(lab, gdb_ep, vmlinux, kallsyms, no_vmlinux, source, no_source),
        hw=hw,
        force=force,
        drop_site=drop_site,
        timeout=timeout,
        interactive=interactive,
    )

    def armed(bp: Breakpoint, site: DropSite | None) -> None:
        if site is not None:
            click.echo(f"kdbg: drop site {site.caller}: {site.instruction} ({site.callee})",
                       err=True)
        decision = bp.decision
        if decision is not None and getattr(decision, "verdict", "") != "allow":
            click.echo(f"kdbg: guard: {decision.verdict}: {decision.why}", err=True)
        click.echo(f"kdbg: breakpoint {bp.number} armed at {bp.label} (0x{bp.address:x}); "
                   f"waiting up to {timeout:g} s", err=True)

    result = run.break_and_wait(req, on_armed=armed, progress=_say)
    if as_json:
        click.echo(json.dumps(result.stop.to_json()))
    else:
        click.echo(run.render_stop(result.stop))
    click.echo(f"kdbg: {result.cleanup.message()}", err=True)


COMMANDS = [gdb_group]
