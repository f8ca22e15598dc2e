"""kdbg gdb: --help on every command, and argument errors (no target needed)."""

from __future__ import annotations

from click.testing import CliRunner

from kdbg.cli import main


def test_help_everywhere() -> None:
    for args in (["gdb", "--help"], ["gdb", "attach", "--help"], ["gdb", "break", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_lab_and_gdb_conflict() -> None:
    result = CliRunner().invoke(
        main, ["gdb", "break", "tcp_v4_rcv", "--lab", "x", "--gdb", "tcp:127.0.0.1:1"]
    )
    assert result.exit_code == 2 and "not both" in result.output


def test_bad_endpoint_exit_status() -> None:
    result = CliRunner().invoke(main, ["gdb", "break", "tcp_v4_rcv", "--gdb", "nowhere"])
    assert result.exit_code == 2 and "cannot parse gdb endpoint" in result.output


def test_unreachable_stub_is_a_clean_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        result = CliRunner().invoke(
            main, ["gdb", "break", "0xffffffff81000000", "--gdb", f"tcp:127.0.0.1:{port}",
                   "--force", "--timeout", "1"]
        )
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbg: error: nothing listens on port")
