"""Options that several commands share, declared once."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import click
from click.core import ParameterSource

from kdbg.errors import BadInput
from kdbg.trace.filters import FILTER_FIELDS, PROTOCOLS, PacketFilters

F = TypeVar("F", bound=Callable[..., object])


class Decorator(Protocol):
    def __call__(self, f: F, /) -> F: ...


def _stacked(options: list[Decorator]) -> Decorator:
    """One decorator applying ``options`` so that they list in this order."""

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


REASON_HELP = ("Drop reason (NETFILTER_DROP, netfilter_drop or "
               "SKB_DROP_REASON_NETFILTER_DROP). Repeatable.")
LOCATION_HELP = "Dropping function, or exact SYM+0xOFF / 0xADDR. Repeatable."
NETNS_HELP = "Network namespace: inode, /var/run/netns/X, /proc/PID/ns/net, or a name."
IFNAME_HELP = "Interface the skb is on."


def packet_filters(*, reason: str | None = REASON_HELP, location: str = LOCATION_HELP,
                   netns: str = NETNS_HELP, ifname: str = IFNAME_HELP,
                   netns_metavar: str = "INODE|PATH|NAME",
                   before_netns: tuple[Decorator, ...] = ()) -> Decorator:
    """The filter options of :class:`~kdbg.trace.filters.PacketFilters`, declared once:
    ``--reason`` and ``--location`` (left out with ``reason=None``), ``--proto``,
    ``--saddr/--daddr/--addr``, ``--sport/--dport/--port``, then ``before_netns``,
    ``--netns`` and ``--ifname``. The texts are each command's own; read the values
    back with :func:`filters_from`."""
    options: list[Decorator] = []
    if reason is not None:
        options += [
            click.option("--reason", "reasons", multiple=True, metavar="NAME", help=reason),
            click.option("--location", "locations", multiple=True, metavar="SYM[+OFF]",
                         help=location),
        ]
    options += [
        click.option("--proto", type=click.Choice(sorted(PROTOCOLS)), help="L4 protocol."),
        click.option("--saddr", "saddrs", multiple=True, metavar="ADDR[/LEN]",
                     help="Source address."),
        click.option("--daddr", "daddrs", multiple=True, metavar="ADDR[/LEN]",
                     help="Destination address."),
        click.option("--addr", "addrs", multiple=True, metavar="ADDR[/LEN]",
                     help="Source or destination address."),
        click.option("--sport", "sports", multiple=True, type=int, metavar="PORT",
                     help="Source port."),
        click.option("--dport", "dports", multiple=True, type=int, metavar="PORT",
                     help="Destination port."),
        click.option("--port", "ports", multiple=True, type=int, metavar="PORT",
                     help="Source or destination port."),
        *before_netns,
        click.option("--netns", metavar=netns_metavar, help=netns),
        click.option("--ifname", metavar="DEV", help=ifname),
    ]
    return _stacked(options)


def tracer_options(*, count: str, json: str = "JSON lines, each tagged with \"type\".",
                   print_bpf: bool = True) -> Decorator:
    """What every tracer command takes after its filters, declared once: ``--count``
    (``count`` says what is counted), ``--duration``, ``--cmd``, ``--json``,
    ``--buffer-pages`` and, with ``print_bpf``, ``--print-bpf``."""
    options: list[Decorator] = [
        click.option("--count", type=int, metavar="N", help=count),
        click.option("--duration", type=float, metavar="S", help="Stop after S seconds."),
        click.option("--cmd", metavar="CMD",
                     help="Run CMD once attached; stop when it exits and exit with its status."),
        click.option("--json", "as_json", is_flag=True, help=json),
        click.option("--buffer-pages", type=int, default=256, show_default=True,
                     help="Ring buffer size in pages (a power of two)."),
    ]
    if print_bpf:
        options.append(click.option("--print-bpf", is_flag=True,
                                    help="Print the generated BPF C and exit."))
    return _stacked(options)


class Prepared(Protocol):
    """A tracer ready to attach (``kdbg watch``'s or ``kdbg path``'s)."""

    text: str

    def run(self, sink: Any) -> Any: ...


def run_tracer(prepared: Prepared, print_bpf: bool, sink: Callable[[], Any]) -> None:
    """``--print-bpf`` prints the program; otherwise run it into ``sink()`` and exit
    with the ``--cmd`` workload's status, if there was one."""
    if print_bpf:
        click.echo(prepared.text)
        return
    result = prepared.run(sink())
    if result.cmd_status is not None:
        sys.exit(result.cmd_status)


def filters_from(opts: dict[str, Any]) -> PacketFilters:
    """Take the :func:`packet_filters` values out of a command's keyword arguments."""
    return PacketFilters(**{name: opts.pop(name) for name in FILTER_FIELDS if name in opts})


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source is not ParameterSource.DEFAULT


def _flag(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name:
            opts = [o for o in param.opts if o.startswith("--")] or param.opts
            return opts[0]
    return name


def require(ctx: click.Context, rules: Mapping[str, tuple[str, ...]]) -> None:
    """Each option named in ``rules`` that was given needs one of its listed options:
    one that would do nothing is an error (exit 2, one line), never silently ignored."""
    for name, needs in rules.items():
        if _given(ctx, name) and not any(_given(ctx, n) for n in needs):
            wanted = " or ".join(_flag(ctx, n) for n in needs)
            raise BadInput(f"{_flag(ctx, name)} does nothing without {wanted}")


def exclude(ctx: click.Context, rules: Mapping[str, tuple[str, ...]], why: str = "") -> None:
    """Each option named in ``rules`` that was given does nothing with any of its
    listed options: an error (exit 2, one line)."""
    for name, others in rules.items():
        if not _given(ctx, name):
            continue
        for other in others:
            if _given(ctx, other):
                raise BadInput(f"{_flag(ctx, name)} does nothing with {_flag(ctx, other)}"
                               + (f" ({why})" if why else ""))
