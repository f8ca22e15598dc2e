"""``kdbg diagnose``: watch drops, then report them grouped by cause, with advice."""

from __future__ import annotations

import sys

import click

from kdbg import diagnose as diag
from kdbg.cli.options import filters_from, packet_filters, tracer_options
from kdbg.drops import WatchConfig

EXAMPLES = """
\b
Examples:
  kdbg diagnose --duration 10                    every drop for 10 s, grouped by cause
  kdbg diagnose --reason NETFILTER_DROP --cmd './my-test.sh'
  kdbg diagnose --netns blue --proto udp --json  one {"type": "diagnosis"} line per cause
"""


@click.command(epilog=EXAMPLES)
@packet_filters(reason="Drop reason (NETFILTER_DROP, netfilter_drop, …). Repeatable.")
@tracer_options(count="Stop after N matching drops.", print_bpf=False,
                json='One {"type": "diagnosis"} JSON line per cause, then a summary.')
def diagnose(as_json: bool, **opts: object) -> None:
    """Watch packet drops, then say why they happened and what to do.

    Runs like 'kdbg watch' (same filters; a 'kdbg: watching' line on stderr once
    attached) until --duration, --count, --cmd's end or Ctrl-C, then prints one
    entry per cause, most frequent first: count, first and last seen, an example
    packet, the cause (the nftables rule, the missing socket, the setting that
    decided), for a netfilter drop the hook functions registered at its hook (in
    order, the one that dropped it marked), the namespace's SNMP/netstat counters
    that moved with the reason (read before and after), the advice and a command to
    confirm. Nothing on the system is changed: rulesets, hooks, sockets, sysctls and
    counters are only read.
    """
    cfg = WatchConfig(filters=filters_from(opts), **opts)  # type: ignore[arg-type]
    result = diag.run(cfg, sys.stderr)
    if as_json:
        for line in diag.report_json(result):
            click.echo(line)
    else:
        click.echo(diag.report_text(result))
    if result.cmd_status is not None:
        sys.exit(result.cmd_status)


COMMANDS = [diagnose]
