"""kdbg's command line: thin click commands over the library.

Each command parses options into a small config, calls one library function and
renders what comes back. Typed errors (:class:`kdbg.errors.KdbgError`) become a
one-line message and the error's exit status; nothing else is caught here.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from kdbg import __version__
from kdbg.errors import KdbgError


class KdbgGroup(click.Group):
    """A click group that turns kdbg's typed errors into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KdbgError as err:
            click.echo(f"kdbg: error: {err}", err=True)
            sys.exit(err.exit_code)
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(141)


@click.group(name="kdbg", cls=KdbgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdbg")
def main() -> None:
    """kdbg: watch packet drops, name them, and stop the kernel at the drop site.

    \b
    Examples:
      kdbg watch --reason NETFILTER_DROP --proto udp --dport 5555
      kdbg watch --stats --duration 10
      kdbg reasons
      kdbg doctor
    """


def _register() -> None:
    from kdbg.cli import doctor, reasons, watch

    for module in (watch, reasons, doctor):
        for cmd in module.COMMANDS:
            main.add_command(cmd)


_register()
