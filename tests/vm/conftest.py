"""What every vm test needs, checked once before it runs: root, QEMU, virtme-ng in the
venv and Debian's kernel headers. Without them a vm test skips with the fix (or, under
the README's test command, fails), instead of erroring half-way through a boot."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import need


def lab_needs() -> None:
    """Skip (or fail, under KDBG_REQUIRE_ALL=1) unless a lab can boot here."""
    need(os.geteuid() == 0, "the lab needs root (run as root, or ./run test)")
    need(shutil.which("qemu-system-x86_64") is not None,
         "qemu-system-x86_64 missing: apt-get install qemu-system-x86 (scripts/setup.sh)")
    need((Path(sys.executable).parent / "virtme-run").exists(),
         "virtme-ng missing in the venv: pip install -e .[lab] (scripts/setup.sh)")
    need(bool(list(Path("/usr/src").glob("linux-headers-*-amd64"))),
         "Debian kernel headers missing: scripts/setup.sh installs linux-headers-amd64")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of a vm test boots a lab."""
    lab_needs()
