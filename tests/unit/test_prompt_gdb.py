"""gdb/kdbg_prompt.py sourced into a real gdb with no symbols and no target: it loads
(in gdb's own Python), ``help kdbg`` lists kdbg's commands, and each command that
cannot work says so in one line, never with a Python traceback."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from kdbg.dirs import GDB_DIR
from tests.conftest import DATA, need

STATE = DATA / "prompt" / "state.6.1.json"
HELPERS = ("kdbg_kallsyms.py", "kdbg_session.py", "kdbg_guard.py", "kdbg_prompt.py")


def _gdb(*commands: str) -> subprocess.CompletedProcess[str]:
    need(shutil.which("gdb") is not None, "gdb: run scripts/setup.sh")
    argv = ["gdb", "--nx", "--batch", "-ex", "set architecture i386:x86-64"]
    for helper in HELPERS:  # as kdbg sources them at attach
        argv += ["-ex", f"source {GDB_DIR / helper}"]
    for c in commands:
        argv += ["-ex", c]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _clean(r: subprocess.CompletedProcess[str]) -> None:
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "Python Exception" not in out, out


def test_help_kdbg_lists_the_commands() -> None:
    r = _gdb("help kdbg")
    _clean(r)
    lines = r.stdout.splitlines()
    lines = lines[lines.index("kdbg's commands at this prompt:"):]
    listed = [line.split()[0].rstrip(":") for line in lines[1:] if line.startswith("  ")]
    assert listed == ["kdbg-skb", "kdbg-rule", "kdbg-journey", "kdbg-where", "kdbg-state",
                      "kdbg-done", "kdbg-break", "kdbg-guard", "kdbg-sym", "kdbg-kallsyms"]
    assert "Linux's own gdb helpers (lx-dmesg, lx-ps, $lx_current(), ...) are not loaded: " \
           "source TREE/vmlinux-gdb.py" in r.stdout


@pytest.mark.parametrize(("command", "error"), [
    ("kdbg-skb", "kdbg-skb: no skb to show: No registers. (give one: kdbg-skb EXPR)"),
    ("kdbg-skb 0xff11000009432900", "kdbg-skb: gdb does not know struct sk_buff (load the "
                                    "kernel's vmlinux with DWARF: symbol-file VMLINUX)"),
    ("kdbg-skb --record", "usage: kdbg-skb [--record FILE] [EXPR]"),
    ("kdbg-rule", "kdbg-rule: No registers."),
    ("kdbg-where", "kdbg-where: no kdbg state loaded (kdbg-state FILE; kdbg loads it when it "
                   "hands over the prompt)"),
    ("kdbg-journey", "kdbg-journey: no kdbg state loaded (kdbg-state FILE; kdbg loads it when "
                     "it hands over the prompt)"),
    ("kdbg-journey --record", "usage: kdbg-journey [--record FILE] [EXPR]"),
    ("kdbg-state", "usage: kdbg-state FILE"),
    ("kdbg-state /nonexistent/state.json", "kdbg-state: cannot read /nonexistent/state.json: "
                                           "No such file or directory"),
    ("lx-symbols", 'Undefined command: "lx-symbols".'),  # Linux's scripts are not loaded
])
def test_each_command_fails_in_one_line(command: str, error: str) -> None:
    r = _gdb(command)
    _clean(r)
    assert r.stderr.strip().splitlines() == [error + ("  Try \"help\"." if "Undefined" in error
                                                      else "")]


def test_state_without_a_target() -> None:
    r = _gdb(f"kdbg-state {STATE}", "kdbg-where", "p $kdbg_skb", "kdbg-skb")
    _clean(r)
    assert (f"kdbg: state from {STATE}; stopped at nft_do_chain+0x47a (0xffffffffc038654a); "
            "skb 0xff11000009432900 in $kdbg_skb; 1 breakpoint(s); 1 module root(s)") in r.stdout
    # kdbg-where reads only the state; the breakpoint is not in this gdb
    assert "  1   nft_do_chain+0x47a (0xffffffffc038654a)  [no longer in gdb]" in r.stdout
    assert f"$1 = {0xFF11000009432900}" in r.stdout  # no struct sk_buff: the integer
    assert r.stderr.strip() == ("kdbg-skb: gdb does not know struct sk_buff (load the kernel's "
                                "vmlinux with DWARF: symbol-file VMLINUX)")


def test_small_pointers_print_plain() -> None:
    r = _gdb("p (void *)0", "p (char *)0x10", "p (void *)0x2000000", "info pretty-printer")
    _clean(r)
    assert "$1 = 0x0\n$2 = 0x10\n$3 = (void *) 0x2000000\n" in r.stdout
    assert "kdbg-small-pointers" in r.stdout


def test_sourcing_again_keeps_the_state() -> None:
    r = _gdb(f"kdbg-state {STATE}", f"source {GDB_DIR / 'kdbg_prompt.py'}", "kdbg-state",
             "help kdbg")
    _clean(r)
    assert r.stdout.count(f"kdbg: state from {STATE}") == 2
    assert r.stdout.count("kdbg's commands at this prompt:") == 1
