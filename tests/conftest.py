"""Test tiers: unit (anywhere), kernel (root + BPF), vm (boots the lab).

A tier skips with an actionable reason where its needs are absent. Under the
README's test command (KDBG_REQUIRE_ALL=1) a missing need is a failure instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"


def need(ok: bool, reason: str) -> None:
    """Skip (or, under KDBG_REQUIRE_ALL=1, fail) unless ``ok``."""
    if ok:
        return
    if os.environ.get("KDBG_REQUIRE_ALL") == "1":
        pytest.fail(f"missing need: {reason}", pytrace=False)
    pytest.skip(reason)


@contextmanager
def clone_reachable_by_others() -> Iterator[None]:
    """Each directory above this clone searchable by other users (o+x) while the block
    runs, their modes restored after: a clone under /root (mode 700) would otherwise keep
    uid 65534 from starting kdbg at all, and a test of what kdbg tells that user would
    see only the shell's 'Permission denied'."""
    changed = []
    for d in reversed(TESTS.parent.parents):  # from / down
        mode = d.stat().st_mode & 0o7777
        if not mode & 0o001:
            os.chmod(d, mode | 0o001)
            changed.append((d, mode))
    try:
        yield
    finally:
        for d, mode in reversed(changed):
            os.chmod(d, mode)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if tier in ("kernel", "vm"):
            item.add_marker(getattr(pytest.mark, tier))
