"""``kdbg exporter``: drop counts kept in the kernel, on /metrics for Prometheus."""

from __future__ import annotations

import click

from kdbg import exporter as exp
from kdbg.cli.options import filters_from, packet_filters

EXAMPLES = f"""
\b
Examples:
  kdbg exporter                                  on {exp.DEFAULT_LISTEN}, by reason and location
  kdbg exporter --listen 127.0.0.1:0             a free port (named in the 'exporting' line)
  kdbg exporter --labels reason,netns,ifname     per namespace and interface
  kdbg exporter --labels reason --reason NETFILTER_DROP --proto udp
  kdbg exporter --print-bpf                      show the generated C and exit

\b
Labels (--labels): each distinct combination is one time series.
  reason, location (the function)  bounded by the kernel's code: tens of series
  netns, ifname                    grow with namespaces and interfaces; the kernel
                                   then reads each counted drop's device as well
"""


@click.command(epilog=EXAMPLES)
@click.option("--listen", default=exp.DEFAULT_LISTEN, show_default=True, metavar="ADDR:PORT",
              help="Address to serve /metrics on ([v6]:PORT for IPv6; port 0: any free one).")
@click.option("--labels", "labels_text", default=",".join(exp.DEFAULT_LABELS),
              show_default=True, metavar="L1,L2",
              help="Labels of kdbg_drops_total, from " + ",".join(exp.LABELS) + " (or 'none').")
@packet_filters(reason="Count only this drop reason. Repeatable.",
                location="Count only drops in this function (or at SYM+0xOFF). Repeatable.",
                netns="Count only this network namespace.",
                ifname="Count only drops on this interface.")
@click.option("--duration", type=float, metavar="S", help="Stop after S seconds.")
@click.option("--print-bpf", is_flag=True, help="Print the generated BPF C and exit.")
def exporter(listen: str, labels_text: str, duration: float | None, print_bpf: bool,
             **filters: object) -> None:
    """Serve kdbg's in-kernel drop counts to Prometheus (OpenMetrics) on /metrics.

    The counts are the ones `kdbg watch --stats` keeps: per CPU, in the kernel,
    exact under load; a scrape reads them and never holds up the kernel side.
    The watch filters apply. SIGTERM or Ctrl-C stops it.
    """
    cfg = exp.ExporterConfig(listen=exp.parse_listen(listen),
                             labels=exp.parse_labels(labels_text),
                             filters=filters_from(filters),
                             duration=duration)
    prepared = exp.prepare(cfg)
    if print_bpf:
        click.echo(prepared.text)
        return
    result = prepared.run(lambda line: click.echo(line, err=True))
    click.echo(f"kdbg: exporter stopped after {result.scrapes} scrapes", err=True)


COMMANDS = [exporter]
