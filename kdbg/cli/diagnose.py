"""``kdbg diagnose``: watch drops, then report them grouped by cause, with advice."""

from __future__ import annotations

import sys

import click

from kdbg import watch as watch_mod
from kdbg.cli.options import packet_filters
from kdbg.drops import diagnose as diag

EXAMPLES = """
\b
Examples:
  kdbg diagnose --duration 10                    every drop for 10 s, grouped by cause
  kdbg diagnose --reason NETFILTER_DROP --cmd './my-test.sh'
  kdbg diagnose --netns blue --proto udp --json  one {"type": "diagnosis"} line per cause
"""


@click.command(epilog=EXAMPLES)
@click.option("--reason", "reasons", multiple=True, metavar="NAME",
              help="Drop reason (NETFILTER_DROP, netfilter_drop, …). Repeatable.")
@click.option("--location", "locations", multiple=True, metavar="SYM[+OFF]",
              help="Dropping function, or exact SYM+0xOFF / 0xADDR. Repeatable.")
@packet_filters
@click.option("--netns", metavar="INODE|PATH|NAME",
              help="Network namespace: inode, /var/run/netns/X, /proc/PID/ns/net, or a name.")
@click.option("--ifname", metavar="DEV", help="Interface the skb is on.")
@click.option("--count", type=int, metavar="N", help="Stop after N matching drops.")
@click.option("--duration", type=float, metavar="S", help="Stop after S seconds.")
@click.option("--cmd", metavar="CMD",
              help="Run CMD once attached; stop when it exits and exit with its status.")
@click.option("--json", "as_json", is_flag=True,
              help='One {"type": "diagnosis"} JSON line per cause, then a summary.')
@click.option("--buffer-pages", type=int, default=256, show_default=True,
              help="Ring buffer size in pages (a power of two).")
def diagnose(as_json: bool, **opts: object) -> None:
    """Watch packet drops, then say why they happened and what to do.

    Runs like 'kdbg watch' (same filters; a 'kdbg: watching' line on stderr once
    attached) until --duration, --count, --cmd's end or Ctrl-C, then prints one
    entry per cause, most frequent first: count, first and last seen, an example
    packet, the cause (the nftables rule, the missing socket, the setting that
    decided), the advice and a command to confirm. Nothing on the system is
    changed: rulesets, sockets and sysctls are only read.
    """
    cfg = watch_mod.WatchConfig(**opts)  # type: ignore[arg-type]
    result = diag.run(cfg, sys.stderr)
    if as_json:
        for line in diag.report_json(result):
            click.echo(line)
    else:
        click.echo(diag.report_text(result))
    if result.cmd_status is not None:
        sys.exit(result.cmd_status)


COMMANDS = [diagnose]
