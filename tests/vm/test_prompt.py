"""At the stop, a kernel developer's debugger, on the default lab (Debian 6.1): gdb's
prompt through ``kdbg watch --break --interactive`` with the kernel's own source, Linux's
gdb helpers and kdbg's commands that know the packet and its rule. The 6.12 lab's turn is
in test_lab_612.py, the built kgdb kernel's (opt-in) in test_debugger.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.vm.conftest import check_the_stop, udp_drops

PORT = 5571


@pytest.fixture(scope="module")
def lab(default_lab: str) -> Iterator[str]:
    with udp_drops(default_lab, PORT, every=1):
        yield default_lab


def test_the_stop_is_a_kernel_developers_debugger(lab: str) -> None:
    check_the_stop(lab, PORT)
