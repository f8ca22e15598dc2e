"""``kdbg watch``: name every packet drop of the running kernel."""

from __future__ import annotations

import sys

import click

from kdbg.cli.bpfdrops import watch_bpf
from kdbg.cli.hwdrops import watch_hw
from kdbg.cli.options import (
    exclude,
    filters_from,
    packet_filters,
    require,
    run_tracer,
    tracer_options,
)
from kdbg.drops import JsonSink, TextSink, WatchConfig, prepare
from kdbg.errors import BadInput
from kdbg.transports import NAMES as TRANSPORTS

EXAMPLES = """
\b
Examples:
  kdbg watch                                    every drop, one line each
  kdbg watch --reason NETFILTER_DROP --proto udp --dport 5555
  kdbg watch --location tcp_v4_rcv --stack      drops in tcp_v4_rcv, with stacks
  kdbg watch --netns /var/run/netns/blue --ifname veth1 --json
  kdbg watch --stats --interval 5 --duration 60 counts kept in the kernel
  kdbg watch --count 1 --cmd 'ip netns exec blue ping -c1 10.77.1.2'
  kdbg watch --journey --dport 5555             each drop with the hops before it
  kdbg watch --reason no_socket --print-bpf     show the generated C and exit
  kdbg watch --hw --json                        hardware drops, from devlink traps
  kdbg watch --bpf --prog xdp_fw --dport 53     XDP_DROP, XDP_ABORTED, TC_ACT_SHOT
  kdbg watch --bpf --stats --duration 60        counts per program and verdict
  kdbg watch --write drops.kdbg --duration 60   keep every drop (kdbg report drops.kdbg)
  kdbg watch --pcap drops.pcapng --dport 5555   dropped packets for Wireshark

\b
  In the lab (kdbg lab up), stop the kernel at a drop site:
  kdbg watch --lab default --reason NETFILTER_DROP
  kdbg watch --reason NETFILTER_DROP --break     arm, hit, backtrace, resume
  kdbg watch --reason NETFILTER_DROP --break --interactive
  kdbg watch --location nft_do_chain --break --transport kgdboe   what the guard says
  kdbg watch --bpf --prog xdp_fw --break        stop in the XDP program's JITed code

\b
  A real machine running KGDBoE:
  kdbg watch --events-cmd 'ssh root@target kdbg watch --json --reason NETFILTER_DROP' \\
             --gdb udp:target:31337 --vmlinux vmlinux-6.1 --break
"""


@click.command(epilog=EXAMPLES)
@packet_filters()
@click.option("--stack", is_flag=True, help="Add the symbolized kernel stack of each drop.")
@click.option("--no-causes", "causes", is_flag=True, flag_value=False, default=True,
              help="Leave out each drop's cause (the rule, the missing socket, the setting; "
                   "see 'kdbg diagnose').")
@click.option("--journey/--no-journey", default=None,
              help="Each drop with its packet's journey: the hops it crossed before, with "
                   "what changed (on by default with --break).")
@click.option("--stats", is_flag=True,
              help="Count drops per (reason, location) in the kernel; exact under load.")
@click.option("--events", is_flag=True, help="With --stats, also show each drop.")
@click.option("--interval", type=float, metavar="S", help="With --stats, print counts every S.")
@tracer_options(count="Stop after N matching drops.")
@click.option("--write", "write", metavar="FILE", type=click.Path(dir_okay=False),
              help="Record every matching drop, with the packet's first bytes, to FILE "
                   "(read it with 'kdbg report'; docs/record.md).")
@click.option("--pcap", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the dropped packets as pcapng to FILE, each with a comment "
                   "naming its drop (recorded losslessly, written at the end).")
@click.option("--snaplen", type=int, metavar="N",
              help="With --write/--pcap: bytes of each packet to keep (default 128).")
@click.option("--break", "do_break", is_flag=True,
              help="Arm a breakpoint at the first matching drop site; report the next hit.")
@click.option("--lab", metavar="NAME",
              help="Trace (and with --break, debug) lab NAME; --break alone uses 'default'.")
@click.option("--events-cmd", metavar="CMD",
              help="Take drops from CMD, which prints kdbg's JSON lines (e.g. over ssh).")
@click.option("--gdb", "gdb_endpoint", metavar="ENDPOINT",
              help="gdb endpoint of the same kernel: tcp:H:P, udp:H:P (KGDBoE), serial:H:P.")
@click.option("--vmlinux", type=click.Path(exists=True, dir_okay=False),
              help="The target's vmlinux with DWARF: file:line for each drop, skb fields at "
                   "a stop (default: the distribution's debug vmlinux, or the lab's).")
@click.option("--kallsyms", "kallsyms_path", type=click.Path(exists=True, dir_okay=False),
              help="A copy of the target's /proc/kallsyms (with --gdb).")
@click.option("--source", "source_tree", type=click.Path(exists=True, file_okay=False),
              help="With --gdb: the kernel's source tree, for source lines at the stop "
                   "(and Linux's gdb helpers, from its vmlinux-gdb.py).")
@click.option("--no-source", is_flag=True,
              help="With --break: no kernel source or Linux gdb helpers at the stop "
                   "(a lab fetches its kernel's exact source once, into the cache).")
@click.option("--transport", type=click.Choice(TRANSPORTS),
              help="Judge breakpoints as for this transport (default: the endpoint's).")
@click.option("--interactive", is_flag=True, help="At the hit, hand over gdb's prompt.")
@click.option("--force", is_flag=True, help="Break even where the guard refuses (warned).")
@click.option("--hw", is_flag=True,
              help="Hardware drops (devlink traps) instead of skb:kfree_skb.")
@click.option("--bpf", is_flag=True,
              help="Drops decided by XDP and tc programs (XDP_DROP, XDP_ABORTED, TC_ACT_SHOT), "
                   "through fexit on each loaded program (docs/bpf.md).")
@click.option("--prog", "progs", multiple=True, metavar="NAME|ID",
              help="With --bpf: only this program (repeatable); with --break, stop in it.")
@click.option("--hw-break", is_flag=True, help="With --break: use a hardware breakpoint.")
@click.option("--break-count", type=int, default=1, show_default=True,
              help="Stops to report before ending.")
@click.pass_context
def watch(ctx: click.Context, as_json: bool, print_bpf: bool, do_break: bool, lab: str | None,
          events_cmd: str | None, gdb_endpoint: str | None, vmlinux: str | None,
          kallsyms_path: str | None, source_tree: str | None, no_source: bool,
          transport: str | None, interactive: bool, force: bool,
          hw: bool, bpf: bool, progs: tuple[str, ...], hw_break: bool, break_count: int,
          write: str | None, pcap: str | None,
          snaplen: int | None, **opts: object) -> None:
    """Watch packet drops on skb:kfree_skb and name each one.

    Each drop shows its reason (named by the running kernel), where it happened
    as symbol+offset, and the packet's protocol, addresses, ports, network
    namespace and interface. Every filter runs in the kernel. Once attached,
    a line starting 'kdbg: watching' goes to stderr.
    """
    check_options(ctx)
    if bpf:
        watch_bpf(ctx, as_json, print_bpf)
        return
    if hw:
        watch_hw(ctx, as_json, print_bpf)
        return
    cfg = WatchConfig(filters=filters_from(opts), vmlinux=vmlinux,
                      **opts)  # type: ignore[arg-type]
    if write is not None or pcap is not None:
        from kdbg.cli.report import record  # recording: see docs/architecture.md

        record(ctx, cfg, write, pcap, snaplen, as_json, print_bpf, lab)
        return
    if do_break or lab is not None or events_cmd is not None:
        from kdbg.cli.breakwatch import break_watch  # the debugger and the lab: ditto

        break_watch(cfg, as_json, do_break=do_break, lab=lab, events_cmd=events_cmd,
                    gdb=gdb_endpoint, vmlinux=vmlinux, kallsyms=kallsyms_path,
                    source=source_tree, want_source=not no_source, transport=transport,
                    interactive=interactive, force=force, hw_break=hw_break,
                    break_count=break_count)
    prepared = prepare(cfg)
    run_tracer(prepared, print_bpf, lambda: JsonSink(sys.stdout, sys.stderr) if as_json
               else TextSink(sys.stdout, sys.stderr))


# Options that do nothing without another, or with another: exit 2, never ignored.
NEEDS = {
    "interval": ("stats",), "events": ("stats",),
    "gdb_endpoint": ("do_break",), "transport": ("do_break",),
    "interactive": ("do_break",), "force": ("do_break",),
    "break_count": ("do_break",), "kallsyms_path": ("do_break", "events_cmd"),
    "hw_break": ("do_break",), "source_tree": ("gdb_endpoint",), "no_source": ("do_break",),
    "snaplen": ("write", "pcap"), "progs": ("bpf",),
}
# --journey: the hops come with drops that are shown one by one.
JOURNEY_WITHOUT = ("write", "pcap", "hw", "bpf")
LOCAL_ONLY = ("stats", "events", "interval", "cmd", "buffer_pages", "print_bpf")


def check_options(ctx: click.Context) -> None:
    """Refuse options that would be silently ignored (one line, exit 2)."""
    require(ctx, NEEDS)
    exclude(ctx, {name: ("lab", "do_break", "events_cmd") for name in LOCAL_ONLY},
            why="the tracer runs in the target with its drop options only")
    if ctx.params.get("journey"):  # --no-journey goes with anything
        exclude(ctx, {"journey": JOURNEY_WITHOUT}, why="a journey comes with each drop shown")
        if ctx.params.get("stats") and not ctx.params.get("events"):
            raise BadInput("--journey does nothing with --stats alone (add --events)")


COMMANDS = [watch]
