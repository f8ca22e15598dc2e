"""``kdbg report``: read a recording of ``kdbg watch --write``; and the recording side
of ``kdbg watch`` (--write, --pcap)."""

from __future__ import annotations

import json
import sys

import click
from click.core import ParameterSource

from kdbg import record as rec
from kdbg.cli.options import exclude, filters_from, packet_filters, require
from kdbg.drops import (
    JsonSink,
    Summary,
    TextSink,
    WatchConfig,
    stats_json,
    stats_rows,
    stats_table,
)
from kdbg.errors import BadInput

EXAMPLES = """
\b
Examples:
  kdbg watch --write drops.kdbg --cmd './storm'   record every drop (docs/record.md)
  kdbg report drops.kdbg                          the same lines as kdbg watch
  kdbg report drops.kdbg --json --dport 5555      JSON lines, filtered as watch filters
  kdbg report drops.kdbg --stats                  counts per reason and location
  kdbg report drops.kdbg --group-by flow --top 10 the ten flows that lost most
  kdbg report drops.kdbg --pcap drops.pcapng      the packets for Wireshark, commented
  kdbg report before.kdbg after.kdbg              what changed: drops per reason,
                                                  location and flow, most changed first
  kdbg report a.jsonl b.jsonl --by cause --json   per cause, from 'kdbg watch --json' files
"""


@click.command(epilog=EXAMPLES)
@click.argument("files", nargs=-1, required=True, metavar="FILE [FILE_B]")
@packet_filters(reason="Drop reason, as the recording's kernel names it. Repeatable.",
                netns="Network namespace: inode, or a name the recording knows.",
                netns_metavar="INODE|NAME", ifname="Interface the skb was on.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, each tagged with \"type\".")
@click.option("--stats", is_flag=True, help="Counts per (reason, location) instead of lines.")
@click.option("--group-by", type=click.Choice(["reason", "location", "flow", "netns", "ifname"]),
              help="Counts per reason, location, flow, namespace or interface.")
@click.option("--top", type=int, metavar="N", help="With --stats or --group-by: the N largest.")
@click.option("--pcap", metavar="OUT", type=click.Path(dir_okay=False),
              help="Write the drops (filtered) as pcapng to OUT, a comment on each.")
@click.option("--by", "by", multiple=True, metavar="DIM",
              help="With two files: compare by reason, location, cause or flow "
                   "(repeatable; default all).")
@click.pass_context
def report(ctx: click.Context, files: tuple[str, ...], as_json: bool, stats: bool,
           group_by: str | None, top: int | None, pcap: str | None, by: tuple[str, ...],
           **filters: object) -> None:
    """Report on a recording made by 'kdbg watch --write', or compare two.

    Everything comes from the file (reason names, symbols, namespaces), so the
    report is the same on any machine. A file cut short is read up to its last
    whole block, and the report says how much was cut.

    With two files A and B (recordings, or 'kdbg watch --json' lines, which carry
    causes), the drops per reason, location, cause and flow are compared: each key
    added, gone, changed or the same, by count and by rate, most changed first.
    """
    if len(files) > 2:
        raise BadInput(f"kdbg report takes one file, or two to compare ({len(files)} given)")
    if len(files) == 2:
        if stats or group_by or pcap:
            raise BadInput("comparing two files: no --stats, --group-by or --pcap")
        compared = rec.compare(files[0], files[1], filters_from(filters), by)
        if as_json:
            for line in rec.diff_json(compared):
                click.echo(line)
        else:
            click.echo(rec.diff_text(compared, top))
        return
    if by:
        raise BadInput("--by compares two files: give FILE and FILE_B")
    file = files[0]
    require(ctx, {"top": ("stats", "group_by")})
    exclude(ctx, {"pcap": ("stats", "group_by", "as_json"), "stats": ("group_by",)})
    cfg = rec.ReportConfig(path=file, filters=filters_from(filters),
                               stats=stats, group_by=group_by, top=top, pcap=pcap)
    sink = JsonSink(sys.stdout, sys.stderr) if as_json else TextSink(sys.stdout, sys.stderr)
    off, result = rec.report(cfg, sink.drop)
    if group_by is not None:
        if as_json:
            for key, n in result.groups:
                click.echo(rec.group_json(key, n, group_by))
        else:
            click.echo(rec.group_table(result.groups, group_by))
    if stats:
        rows = stats_rows(dict(result.counts), off.reasons.name, off.decoder.kallsyms.lookup)
        end = result.end or {}
        summary = Summary(matched=result.shown, delivered=result.shown,
                          lost=int(end.get("lost", 0)), seen=end.get("seen"))
        click.echo(stats_json(rows, summary, True) if as_json else stats_table(rows, summary))
    if as_json:
        click.echo(rec.summary_json(result))
    for line in rec.summary_lines(result):
        click.echo(line, err=True)


def record(ctx: click.Context, cfg: WatchConfig, write: str | None, pcap: str | None,
           snaplen: int | None, as_json: bool, print_bpf: bool, lab: str | None) -> None:
    """``kdbg watch --write/--pcap`` (here, or with ``--lab`` in a lab guest): record,
    then say what was kept."""
    for name in ("write", "pcap"):
        exclude(ctx, {name: ("stats", "events", "interval", "stack", "do_break",
                             "events_cmd")})
    if write == "-" and (as_json or pcap is not None or lab is not None):
        raise BadInput("--write - puts the recording on stdout: no --json, --pcap or --lab")
    given = ctx.get_parameter_source("buffer_pages") not in (None, ParameterSource.DEFAULT)
    opts = rec.RecordOptions(
        write=write, pcap=pcap,
        snaplen=rec.SNAPLEN_DEFAULT if snaplen is None else snaplen,
        ring_pages=cfg.buffer_pages if given else rec.RING_PAGES_DEFAULT)
    sink = JsonSink(sys.stdout, sys.stderr) if as_json else TextSink(sys.stdout, sys.stderr)
    if lab is not None:
        result = rec.record_lab(cfg, opts, lab, sink.watching)
    else:
        recorder = rec.prepare(cfg, opts)
        if print_bpf:
            click.echo(recorder.text)
            return
        result = recorder.run(sink)
    where = f" to {result.path}" if result.path else ""
    per = f", {result.bytes // result.records} bytes each" if result.records else ""
    line = (f"kdbg: {result.records} drops recorded{where} ({result.bytes} bytes{per}); "
            f"the kernel counted {result.matched} matching, {result.lost} lost")
    if result.lost:
        line += " (ring buffer full: raise --buffer-pages or lower --snaplen)"
    if result.pcap_packets is not None:
        line += f"; {result.pcap_packets} packets written to {pcap}"
    click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps({"type": "summary", "recorded": result.records,
                               "matched": result.matched, "lost": result.lost,
                               "seen": result.seen, "bytes": result.bytes, "file": result.path,
                               "pcap_packets": result.pcap_packets}, separators=(",", ":")))
    if result.cmd_status is not None:
        sys.exit(result.cmd_status)


COMMANDS = [report]
