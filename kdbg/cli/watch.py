"""``kdbg watch``: name every packet drop of the running kernel."""

from __future__ import annotations

import sys

import click

from kdbg import watch as watch_mod
from kdbg.report import JsonSink, TextSink
from kdbg.trace.filters import PROTOCOLS

EXAMPLES = """
\b
Examples:
  kdbg watch                                    every drop, one line each
  kdbg watch --reason NETFILTER_DROP --proto udp --dport 5555
  kdbg watch --location tcp_v4_rcv --stack      drops in tcp_v4_rcv, with stacks
  kdbg watch --netns /var/run/netns/blue --ifname veth1 --json
  kdbg watch --stats --interval 5 --duration 60 counts kept in the kernel
  kdbg watch --count 1 --cmd 'ping -c1 10.0.0.2' stop after one drop or when ping exits
  kdbg watch --reason no_socket --print-bpf     show the generated C and exit
"""


@click.command(epilog=EXAMPLES)
@click.option("--reason", "reasons", multiple=True, metavar="NAME",
              help="Drop reason (NETFILTER_DROP, netfilter_drop or "
                   "SKB_DROP_REASON_NETFILTER_DROP). Repeatable.")
@click.option("--location", "locations", multiple=True, metavar="SYM[+OFF]",
              help="Dropping function, or exact SYM+0xOFF / 0xADDR. Repeatable.")
@click.option("--proto", type=click.Choice(sorted(PROTOCOLS)), help="L4 protocol.")
@click.option("--saddr", "saddrs", multiple=True, metavar="ADDR[/LEN]", help="Source address.")
@click.option("--daddr", "daddrs", multiple=True, metavar="ADDR[/LEN]",
              help="Destination address.")
@click.option("--addr", "addrs", multiple=True, metavar="ADDR[/LEN]",
              help="Source or destination address.")
@click.option("--sport", "sports", multiple=True, type=int, metavar="PORT", help="Source port.")
@click.option("--dport", "dports", multiple=True, type=int, metavar="PORT",
              help="Destination port.")
@click.option("--port", "ports", multiple=True, type=int, metavar="PORT",
              help="Source or destination port.")
@click.option("--netns", metavar="INODE|PATH|NAME",
              help="Network namespace: inode, /var/run/netns/X, /proc/PID/ns/net, or a name.")
@click.option("--ifname", metavar="DEV", help="Interface the skb is on.")
@click.option("--stack", is_flag=True, help="Add the symbolized kernel stack of each drop.")
@click.option("--stats", is_flag=True,
              help="Count drops per (reason, location) in the kernel; exact under load.")
@click.option("--events", is_flag=True, help="With --stats, also show each drop.")
@click.option("--interval", type=float, metavar="S", help="With --stats, print counts every S.")
@click.option("--count", type=int, metavar="N", help="Stop after N matching drops.")
@click.option("--duration", type=float, metavar="S", help="Stop after S seconds.")
@click.option("--cmd", metavar="CMD",
              help="Run CMD once attached; stop when it exits and exit with its status.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, each tagged with \"type\".")
@click.option("--buffer-pages", type=int, default=256, show_default=True,
              help="Ring buffer size in pages (a power of two).")
@click.option("--print-bpf", is_flag=True, help="Print the generated BPF C and exit.")
def watch(as_json: bool, print_bpf: bool, **opts: object) -> None:
    """Watch packet drops on skb:kfree_skb and name each one.

    Each drop shows its reason (named by the running kernel), where it happened
    as symbol+offset, and the packet's protocol, addresses, ports, network
    namespace and interface. Every filter runs in the kernel. Once attached,
    a line starting 'kdbg: watching' goes to stderr.
    """
    cfg = watch_mod.WatchConfig(**opts)  # type: ignore[arg-type]
    prepared = watch_mod.prepare(cfg)
    if print_bpf:
        click.echo(prepared.text)
        return
    sink = JsonSink(sys.stdout, sys.stderr) if as_json else TextSink(
        sys.stdout, sys.stderr, stats=cfg.stats)
    result = prepared.run(sink)
    if result.cmd_status is not None:
        sys.exit(result.cmd_status)


COMMANDS = [watch]
