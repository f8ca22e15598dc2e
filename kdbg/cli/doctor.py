"""``kdbg doctor``: what kdbg can and cannot do here, and the fixes."""

from __future__ import annotations

import json
import sys

import click

from kdbg.doctor import run_checks


@click.command(epilog="\b\nExamples:\n  kdbg doctor\n  kdbg doctor --json")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check.")
def doctor(as_json: bool) -> None:
    """Check root/CAP_BPF, tracefs, the tracepoint, BTF, bcc and headers, gdb and QEMU.

    Exits 1 when a required check fails.
    """
    checks = run_checks()
    for c in checks:
        if as_json:
            click.echo(json.dumps({"check": c.name, "ok": c.ok, "detail": c.detail,
                                   "fix": c.fix, "required": c.required}))
        else:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
            line = f"{mark} {c.name:<11} {c.detail}"
            if not c.ok:
                line += f"\n     {'':<11} fix: {c.fix}"
            click.echo(line)
    if any(c.required and not c.ok for c in checks):
        sys.exit(1)


COMMANDS = [doctor]
