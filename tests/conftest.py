"""Test tiers: unit (anywhere), kernel (root + BPF), vm (boots the lab).

A tier skips with an actionable reason where its needs are absent. Under the
README's test command (KDBG_REQUIRE_ALL=1) a missing need is a failure instead.
"""

from __future__ import annotations

import os
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if tier in ("kernel", "vm"):
            item.add_marker(getattr(pytest.mark, tier))
