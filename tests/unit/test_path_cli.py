"""``kdbg path`` option errors: one line, exit status 2, before any kernel work."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kdbg.cli import main


@pytest.mark.parametrize("args, needle", [
    (["path", "--buffer-pages", "3"], "power of two"),
    (["path", "--count", "0"], "--count must be positive"),
    (["path", "--duration", "-1"], "--duration must be positive"),
    (["path", "--icmp-id", "70000"], "ICMP identifier out of range"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbg: error:") and needle in lines[0]


def test_help_names_the_json_records_and_examples() -> None:
    result = CliRunner().invoke(main, ["path", "--help"], prog_name="kdbg")
    assert result.exit_code == 0
    assert "Examples:" in result.output and "kdbg path --icmp-id 4242" in result.output
    assert "path" in main.list_commands(__import__("click").Context(main))
