"""Options that several commands share, declared once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

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
