"""The module watch's digest, computed from a copy of /proc/modules as the guest's own
``cut -d' ' -f1,6 /proc/modules | md5sum`` prints it: a change the watch reports with the
digest of the list the session already read is no change."""

from __future__ import annotations

import subprocess

from kdbg.debugger.livemodules import modules_digest

SAMPLE = ("nf_tables 307200 0 - Live 0xffffffffc0a00000\n"
          "nfnetlink 20480 1 nf_tables, Live 0xffffffffc09f0000\n"
          "kdbgtest 16384 0 - Live 0xffffffffc0980000 (OE)\n")


def md5_of_cut(text: str) -> str:
    cut = subprocess.run(["cut", "-d", " ", "-f1,6"], input=text, capture_output=True,
                         text=True, check=True).stdout
    out = subprocess.run(["md5sum"], input=cut, capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def test_the_digest_is_the_guests_command() -> None:
    assert modules_digest(SAMPLE) == md5_of_cut(SAMPLE)


def test_a_module_moved_is_a_change() -> None:
    moved = SAMPLE.replace("0xffffffffc0a00000", "0xffffffffc0b00000")
    assert modules_digest(moved) != modules_digest(SAMPLE)
