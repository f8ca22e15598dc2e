"""``kdbg path``: follow packets across interfaces and namespaces to their end."""

from __future__ import annotations

import sys

import click

from kdbg.cli.options import filters_from, packet_filters, run_tracer, tracer_options
from kdbg.path import tracer
from kdbg.path.report import JsonSink, TextSink

EXAMPLES = """
\b
Examples:
  kdbg path --proto icmp --addr 10.77.1.2       every ICMP packet to or from 10.77.1.2
  kdbg path --icmp-id 4242 --count 2            one ping and its reply, then stop
  kdbg path --proto udp --dport 5555 --json     hops and ends as JSON lines
  kdbg path --netns blue --ifname veth1 --duration 10
  kdbg path --addr 10.77.1.2 --cmd 'ip netns exec red ping -c1 10.77.1.2'
  kdbg path --proto tcp --port 80 --print-bpf  show the generated C and exit
"""


@click.command(epilog=EXAMPLES)
@packet_filters(
    reason=None, netns="Start tracking packets seen in this network namespace.",
    ifname="Start tracking packets seen on this interface.",
    before_netns=(click.option("--icmp-id", "icmp_ids", multiple=True, type=int, metavar="ID",
                               help="ICMP/ICMPv6 echo identifier. Repeatable."),))
@tracer_options(count="Stop after N paths have ended.")
def path(as_json: bool, print_bpf: bool, **opts: object) -> None:
    """Follow packets hop by hop across interfaces and network namespaces.

    A packet is tracked from the first hop where it matches the filters (all run
    in the kernel) and followed by its skb, also through NAT, until it is dropped
    (with the kernel's reason) or consumed. Each packet prints as one block, one
    line per hop: time since its first hop, netns inode and name, interface,
    tracepoint, and addresses, ports or ICMP echo id and sequence. Once attached,
    a line starting 'kdbg: watching' goes to stderr.
    """
    cfg = tracer.PathConfig(filters=filters_from(opts), **opts)  # type: ignore[arg-type]
    prepared = tracer.prepare(cfg)
    run_tracer(prepared, print_bpf, lambda: JsonSink(sys.stdout, sys.stderr) if as_json
               else TextSink(sys.stdout, sys.stderr))


COMMANDS = [path]
