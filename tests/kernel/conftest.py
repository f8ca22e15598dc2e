"""Kernel tier: needs root, BPF, tracefs, BTF and bcc on the running kernel."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import need


def _bcc_ok() -> bool:
    try:
        import bcc  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(autouse=True)
def kernel_needs() -> None:
    need(os.geteuid() == 0, "kernel tests need root (sudo ./run test)")
    need(Path("/sys/kernel/tracing/events/skb/kfree_skb").exists(),
         "tracefs with skb:kfree_skb: mount -t tracefs nodev /sys/kernel/tracing")
    need(Path("/sys/kernel/btf/vmlinux").exists(), "a kernel with BTF")
    need(_bcc_ok(), "bcc: run scripts/setup.sh and use its .venv")
    need(shutil.which("ip") is not None and shutil.which("iptables") is not None,
         "iproute2 and iptables: run scripts/setup.sh")


def need_iptables_legacy() -> None:
    """iptables-legacy and ip6tables-legacy (x_tables' own hooks, not nftables')."""
    need(shutil.which("iptables-legacy") is not None
         and shutil.which("ip6tables-legacy") is not None,
         "iptables-legacy is not installed (Debian's iptables package has it)")
