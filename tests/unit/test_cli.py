"""Every command's --help, and errors as one line with the right exit status."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from kdbg.cli import main


def all_commands(group: click.Group = main, prefix: tuple[str, ...] = ()
                 ) -> list[tuple[str, ...]]:
    """Every command path, loading lazily registered ones the way click does."""
    ctx = click.Context(group)
    out = [prefix]
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        if isinstance(cmd, click.Group):
            out += all_commands(cmd, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "kdbg")
def test_help_has_examples(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="kdbg")
    assert result.exit_code == 0, result.output
    assert "Usage: kdbg" in result.output
    assert "Examples:" in result.output or "Commands:" in result.output
    if path:
        assert "Examples:" in result.output, f"kdbg {' '.join(path)} --help has no examples"


def test_core_commands_are_registered() -> None:
    assert {"watch", "reasons", "doctor"} <= set(main.list_commands(click.Context(main)))


@pytest.mark.parametrize("args, needle", [
    (["watch", "--buffer-pages", "3"], "power of two"),
    (["watch", "--count", "0"], "--count must be positive"),
    (["watch", "--duration", "-1"], "--duration must be positive"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbg: error:") and needle in lines[0]
    assert "Traceback" not in result.output


def test_bad_choice_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["watch", "--proto", "gre"])
    assert result.exit_code == 2 and "gre" in result.output


@pytest.mark.parametrize("args, needle", [
    (["watch", "--interval", "5"], "--interval does nothing without --stats"),
    (["watch", "--events"], "--events does nothing without --stats"),
    (["watch", "--force"], "--force does nothing without --break"),
    (["watch", "--interactive"], "--interactive does nothing without --break"),
    (["watch", "--transport", "kgdboe"], "--transport does nothing without --break"),
    (["watch", "--break-count", "2"], "--break-count does nothing without --break"),
    (["watch", "--gdb", "tcp:127.0.0.1:1"], "--gdb does nothing without --break"),
    (["watch", "--kallsyms", "/dev/null"], "--kallsyms does nothing without --break or "
                                            "--events-cmd"),
    (["watch", "--lab", "x", "--stats"], "--stats does nothing with --lab"),
    (["watch", "--break", "--cmd", "true"], "--cmd does nothing with --break"),
    (["watch", "--events-cmd", "true", "--buffer-pages", "64"],
     "--buffer-pages does nothing with --events-cmd"),
    (["watch", "--lab", "x", "--print-bpf"], "--print-bpf does nothing with --lab"),
    (["watch", "--journey", "--write", "x.kdbg"], "--journey does nothing with --write (a "
                                                   "journey comes with each drop shown)"),
    (["watch", "--journey", "--hw"], "--journey does nothing with --hw"),
    (["watch", "--journey", "--stats"], "--journey does nothing with --stats alone (add "
                                        "--events)"),
    (["gdb", "attach", "--kallsyms", "/dev/null"], "--kallsyms does nothing without --gdb"),
    (["gdb", "break", "x", "--gdb", "tcp:127.0.0.1:1", "--no-vmlinux"],
     "--no-vmlinux does nothing with --gdb"),
    (["gdb", "attach", "--vmlinux", "/dev/null", "--no-vmlinux"],
     "--no-vmlinux does nothing with --vmlinux"),
    (["guard", "check", "tcp_v4_rcv", "--btf", "/dev/null"], "--btf does nothing without "
                                                              "--kallsyms"),
    (["guard", "check", "tcp_v4_rcv", "--lab", "x", "--kallsyms", "/dev/null"],
     "--lab does nothing with --kallsyms"),
    (["demo", "--local", "--keep"], "--keep does nothing with --local"),
    (["demo", "--local", "--interactive"], "--interactive does nothing with --local"),
])
def test_an_option_that_would_do_nothing_is_exit_2(args: list[str], needle: str) -> None:
    """Never silently ignored: one line, exit 2, before anything runs."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbg: error:") and needle in lines[0]


def test_options_that_do_something_pass_the_check() -> None:
    from kdbg.cli.watch import check_options, watch

    for args in (["--stats", "--interval", "5"], ["--stats", "--events"],
                 ["--break", "--force", "--break-count", "2"],
                 ["--events-cmd", "x", "--kallsyms", "/dev/null"], ["--lab", "x"],
                 ["--journey", "--stats", "--events"], ["--no-journey", "--write", "x"],
                 ["--break", "--no-journey"]):
        with watch.make_context("watch", list(args)) as ctx:
            check_options(ctx)


def test_a_command_run_in_process_gives_back_the_callers_sigterm_handler() -> None:
    """SIGTERM raises Terminated while a command runs, and the caller's handler is back
    afterwards (a test process that ran kdbg in-process still stops on SIGTERM)."""
    import signal

    seen: list[object] = []

    @main.command("sigterm-probe", hidden=True)
    def probe() -> None:
        seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    try:
        result = CliRunner().invoke(main, ["sigterm-probe"])
    finally:
        main.commands.pop("sigterm-probe", None)
    assert result.exit_code == 0, result.output
    assert getattr(seen[0], "__name__", "") == "_raise_terminated"
    assert signal.getsignal(signal.SIGTERM) is before
