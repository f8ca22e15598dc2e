"""Events piped from another machine: JSON lines back into DropEvent."""

from __future__ import annotations

import shlex

import pytest

from kdbg.breakwatch.sources import CommandSource, EventStream, EventStreamError, wait_ready
from tests.conftest import DATA

JSONL = DATA / "jsonl" / "netfilter_drop.6.18.jsonl"


def drain(stream: EventStream) -> list[str]:
    kinds = []
    while not stream.items.empty():
        kinds.append(stream.items.get().kind)
    return kinds


def test_lines_split_across_chunks() -> None:
    s = EventStream()
    data = JSONL.read_bytes()
    for i in range(0, len(data), 777):  # arbitrary chunking, as a pipe delivers
        s.feed("stdout", data[i : i + 777])
    s.feed("stderr", b"kdbg: watching skb:kfree_skb on Linux 6.18\nnoise\n")
    s.end(0)
    kinds = drain(s)
    assert kinds.count("drop") == 23
    assert kinds.count("record") == 1  # the summary
    assert kinds.count("ready") == 1 and kinds[-1] == "end"


def test_command_source_end_to_end() -> None:
    cmd = f"echo 'kdbg: watching test' >&2; cat {shlex.quote(str(JSONL))}"
    src = CommandSource(cmd)
    stream = src.start()
    drops = []
    wait_ready(stream, timeout=10, on_item=lambda it: drops.append(it.drop) if it.drop else None)
    while True:
        item = stream.items.get(timeout=10)
        if item.kind == "drop":
            assert item.drop is not None
            drops.append(item.drop)
        if item.kind == "end":
            assert item.status == 0
            break
    assert len(drops) == 23 and drops[0].symbol == "nft_do_chain"
    src.stop()


def test_source_that_fails_before_ready() -> None:
    src = CommandSource("echo 'kdbg: error: unknown drop reason' >&2; exit 2")
    with pytest.raises(EventStreamError, match="unknown drop reason"):
        wait_ready(src.start(), timeout=10)
