"""The compiled-program cache's key: a program is compiled again when its text or one
of kdbg's own headers it includes (bpf/*.h) changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kdbg.trace import objcache


@pytest.fixture
def headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "kdbg_read.h").write_text("#define A 1\n")
    monkeypatch.setattr(objcache, "BPF_DIR", tmp_path)
    objcache.own_headers.cache_clear()
    yield tmp_path
    objcache.own_headers.cache_clear()


def test_a_changed_header_changes_the_key(headers: Path) -> None:
    before = objcache.cache_key("int f(void *ctx) { return A; }", ["f"])
    assert objcache.cache_key("int f(void *ctx) { return A; }", ["f"]) == before
    (headers / "kdbg_read.h").write_text("#define A 2\n")
    objcache.own_headers.cache_clear()  # once per process: the headers do not change in a run
    after = objcache.cache_key("int f(void *ctx) { return A; }", ["f"])
    assert after != before
    (headers / "kdbg_hop.h").write_text("/* new */\n")
    objcache.own_headers.cache_clear()
    assert objcache.cache_key("int f(void *ctx) { return A; }", ["f"]) not in (before, after)


def test_the_text_and_functions_are_in_the_key(headers: Path) -> None:
    key = objcache.cache_key("int f(void *ctx) { return 0; }", ["f"])
    assert objcache.cache_key("int f(void *ctx) { return 1; }", ["f"]) != key
    assert objcache.cache_key("int f(void *ctx) { return 0; }", ["f", "g"]) != key
