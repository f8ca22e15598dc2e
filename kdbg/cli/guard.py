"""``kdbg guard check``: ask the breakpoint safety guard about one location."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

from kdbg.cli.options import exclude, require
from kdbg.errors import BadInput
from kdbg.guard import TargetSymbols, check, enforce, render
from kdbg.targetfacts import LabFacts
from kdbg.transports import NAMES as TRANSPORTS


@dataclass(frozen=True)
class GuardTarget:
    """Where the target's symbols come from, as the options said."""

    lab: str | None
    vmlinux: Path | None
    kallsyms: Path | None
    btf: Path | None

    def load(self) -> TargetSymbols:
        """Build the TargetSymbols these options describe."""
        if self.kallsyms is not None:
            return TargetSymbols.from_parts(self.kallsyms.read_text(), btf_path=self.btf,
                                            vmlinux=self.vmlinux, kaslr_offset=None,
                                            name=str(self.kallsyms))
        if self.lab is not None:
            return LabFacts(self.lab).symbols(vmlinux=self.vmlinux)
        if self.vmlinux is not None:
            return TargetSymbols.from_vmlinux(self.vmlinux)
        return TargetSymbols.local()


def _stack(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(a, 16) for a in text.replace(",", " ").split())
    except ValueError:
        raise BadInput(f"--stack: cannot parse {text!r}",
                       hint="hex addresses, comma separated, innermost first") from None


@click.group()
def guard() -> None:
    """The breakpoint safety guard: is a breakpoint safe on a transport?

    \b
    Examples:
      kdbg guard check tcp_v4_rcv --transport kgdboe
      kdbg guard check serial8250_get_poll_char --transport kgdboc --json
    """


@guard.command("check")
@click.argument("where")
@click.option("--transport", "-t", type=click.Choice(TRANSPORTS), default="kgdboe",
              show_default=True, help="How gdb reaches the target.")
@click.option("--lab", metavar="NAME", help="Judge against a running lab guest's symbols.")
@click.option("--vmlinux", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="vmlinux with DWARF (alone: the target is that kernel).")
@click.option("--kallsyms", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A copy of the target's /proc/kallsyms.")
@click.option("--btf", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The target's BTF (with --kallsyms).")
@click.option("--stack", metavar="ADDR,...", help="Captured stack, innermost first, for "
                                                  "the nearest-safe-frame suggestion.")
@click.option("--force", is_flag=True, help="Record the refusal but allow it (the session may "
                                            "hang).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def check_cmd(where: str, transport: str, lab: str | None, vmlinux: Path | None,
              kallsyms: Path | None, btf: Path | None, stack: str | None, force: bool,
              as_json: bool) -> None:
    """Decide whether a breakpoint at WHERE (SYM, SYM+0xOFF or 0xADDR) is safe.

    Exit status: 0 allowed or warned, 3 refused, 2 unknown symbol or bad input.

    \b
    Examples:
      kdbg guard check tcp_v4_rcv --transport kgdboe
      kdbg guard check nft_do_chain+0x4c --transport gdbstub --json
      kdbg guard check do_sys_openat2 --lab default --transport kgdboc
      kdbg guard check tcp_v4_rcv --vmlinux vmlinux-6.1.0-56-amd64
    """
    ctx = click.get_current_context()
    require(ctx, {"btf": ("kallsyms",)})
    exclude(ctx, {"lab": ("kallsyms",)}, why="the symbols come from --kallsyms")
    symbols = GuardTarget(lab, vmlinux, kallsyms, btf).load()
    try:
        decision = check(where, transport=transport, symbols=symbols, stack=_stack(stack),
                         force=force)
    finally:
        symbols.close()
    if as_json:
        click.echo(json.dumps(decision.to_json()))
    else:
        click.echo(render(decision))
    if decision.forced:
        click.echo("kdbg: warning: breakpoint refused by the guard, forced with --force",
                   err=True)
    enforce(decision)


COMMANDS = [guard]
