"""Options that several commands share, declared once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import click
from click.core import ParameterSource

from kdbg.errors import BadInput
from kdbg.trace.filters import PROTOCOLS

F = TypeVar("F", bound=Callable[..., object])


def packet_filters(f: F) -> F:
    """``--proto``, ``--saddr/--daddr/--addr`` and ``--sport/--dport/--port``: the
    packet filters that ``kdbg watch`` and ``kdbg path`` both compile into the kernel."""
    options = [
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
    ]
    for option in reversed(options):
        f = option(f)
    return f


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
