"""``kdbg reasons``: the running kernel's drop reasons."""

from __future__ import annotations

import json

import click

from kdbg.causes import meaning
from kdbg.symbols import tpformat
from kdbg.symbols.reasons import ReasonTable


@click.command(epilog="\b\nExamples:\n  kdbg reasons\n  kdbg reasons --json | jq .name")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reason.")
def reasons(as_json: bool) -> None:
    """List the drop reasons this kernel knows, with their codes.

    Codes differ between kernels (NO_SOCKET is 2 on 6.1, 3 on 6.18); these are
    read from the running kernel's skb:kfree_skb format.
    """
    table = ReasonTable.from_tpformat(tpformat.load("skb", "kfree_skb"))
    for r in table:
        if as_json:
            click.echo(json.dumps({"code": r.code, "name": r.name, "meaning": meaning(r.name)}))
        else:
            click.echo(f"{r.code:>5}  {r.name:<28} {meaning(r.name)}".rstrip())


COMMANDS = [reasons]
