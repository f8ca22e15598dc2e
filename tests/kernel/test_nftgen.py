"""The netfilter finder's ruleset, kept while the namespace's nf_tables generation holds:
read once, read again at once after a transaction (no waiting for a ttl)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdbg.causes import netfilter, nftgen, nftrules
from kdbg.causes.netnsref import NetnsRef
from kdbg.causes.reads import NetnsReads
from kdbg.demo.throwaway import Netns, run_checked

TABLE = "table ip t {\n chain c {\n  type filter hook input priority 0;\n  %s\n }\n}\n"


@contextlib.contextmanager
def netns(name: str) -> Iterator[Netns]:
    run_checked(["ip", "netns", "add", name])
    try:
        yield Netns(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns("kdbgnftgen") as ns:
        yield ns


def test_a_transaction_moves_the_generation_and_the_ruleset_is_read_again(
        ns: Netns, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = NetnsRef(ns.inode, str(Path("/var/run/netns") / ns.name), name=ns.name)
    reads = NetnsReads(ttl=3600.0)  # only the generation can tell a change here
    runs: list[int] = []
    real = nftrules.read
    monkeypatch.setattr(nftrules, "read", lambda ref: runs.append(1) or real(ref))
    try:
        ns.run(["nft", "-f", "-"], input_=TABLE % "udp dport 5000 drop")
        gen = reads.generations.of(ref)
        assert gen is not None
        first = netfilter.ruleset(reads, ref)
        assert [r.text for c in first.chains.values() for r in c.rules][0].startswith(
            "udp dport 5000 drop")
        assert netfilter.ruleset(reads, ref) is first and len(runs) == 1
        ns.run(["nft", "add", "rule", "ip", "t", "c", "udp", "dport", "6000", "drop"])
        assert reads.generations.of(ref) == gen + 1
        second = netfilter.ruleset(reads, ref)
        assert len(runs) == 2
        assert [r.text.split(" #")[0] for c in second.chains.values() for r in c.rules] == [
            "udp dport 5000 drop", "udp dport 6000 drop"]
    finally:
        reads.generations.close()


def test_a_namespace_gone_gives_no_generation_and_frees_its_socket() -> None:
    gens = nftgen.Generations()
    with netns("kdbgnftgen2") as ns:
        ref = NetnsRef(ns.inode, str(Path("/var/run/netns") / ns.name), name=ns.name)
        assert gens.of(ref) is not None
    assert gens.of(ref) is None
    assert gens._socks == {}
