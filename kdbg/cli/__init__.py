"""kdbg's command line: thin click commands over the library.

Each command parses options into a small config, calls one library function and
renders what comes back. Typed errors (:class:`kdbg.errors.KdbgError`) become a
one-line message and the error's exit status; nothing else is caught here.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from kdbg import __version__
from kdbg.errors import KdbgError
from kdbg.lifetime import Terminated, sigterm_as_interrupt


class KdbgGroup(click.Group):
    """A click group that loads its commands lazily and turns kdbg's typed errors
    into one line and an exit status."""

    # command name -> module under kdbg.cli that defines it (as COMMANDS)
    lazy: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module = importlib.import_module(f"kdbg.cli.{self.lazy[cmd_name]}")
            for cmd in module.COMMANDS:
                self.add_command(cmd)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        # SIGTERM ends a command the way Ctrl-C does: through its clean-up.
        with sigterm_as_interrupt():
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KdbgError as err:
            click.echo(f"kdbg: error: {err}", err=True)
            sys.exit(err.exit_code)
        except Terminated:
            click.echo("kdbg: terminated", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("kdbg: interrupted", err=True)
            sys.exit(130)
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
    """Name every command and the module that holds it; modules load on first use,
    so ``kdbg watch`` starts without importing the debugger or the lab."""
    KdbgGroup.lazy.update({
        "watch": "watch",
        "diagnose": "diagnose",
        "path": "path",
        "reasons": "reasons",
        "doctor": "doctor",
        "guard": "guard",
        "demo": "demo",
        "gdb": "gdb",
        "lab": "lab",
        "report": "report",
        "exporter": "exporter",
    })


_register()
