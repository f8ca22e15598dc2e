"""The nf_tables generation over netlink, and the ruleset kept while it holds."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from kdbg.causes import netfilter, nftgen, nftrules
from kdbg.causes.netnsref import NetnsRef
from kdbg.causes.reads import NetnsReads

# The host kernel's answer to request(7): NFT_MSG_NEWGEN, NFTA_GEN_ID 1, the asking
# process's pid and name.
REPLY = bytes.fromhex("300000000f0a000007000000d343000000000001080001000000000108000200"
                      "000043d30b000300707974686f6e0000")


def test_the_request_is_a_getgen_for_every_family() -> None:
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", nftgen.request(7))
    assert (length, kind, flags, seq, pid) == (20, (10 << 8) | 16, 1, 7, 0)
    assert nftgen.request(7)[16:] == b"\0\0\0\0"


def test_the_generation_is_read_from_the_reply() -> None:
    assert nftgen.parse(REPLY, 7) == 1
    assert nftgen.parse(REPLY, 8) is None  # another request's
    assert nftgen.parse(REPLY[:20], 7) is None  # cut short: no NFTA_GEN_ID


def test_an_error_reply_gives_no_generation() -> None:
    err = struct.pack("=IHHII", 36, nftgen.NLMSG_ERROR, 0, 7, 0) + struct.pack("=i", -2)
    assert nftgen.parse(err + bytes(16), 7) is None


class Generations:
    def __init__(self) -> None:
        self.value: int | None = 5

    def of(self, ns: NetnsRef) -> int | None:
        return self.value


def reads_with(monkeypatch: pytest.MonkeyPatch, rulesets: list[nftrules.Ruleset]
               ) -> tuple[NetnsReads, Generations, list[int]]:
    reads = NetnsReads(ttl=2.0, clock=lambda: 0.0)  # the ttl never runs out here
    gens = Generations()
    reads.generations = gens  # type: ignore[assignment]
    calls: list[int] = []

    def read(ns: Any) -> nftrules.Ruleset:
        calls.append(1)
        return rulesets[len(calls) - 1]

    monkeypatch.setattr(nftrules, "read", read)
    return reads, gens, calls


NS = NetnsRef(4026531840, "/proc/self/ns/net", own=True)


def ruleset(volatile: bool = False) -> nftrules.Ruleset:
    return nftrules.Ruleset({}, {}, volatile)


def test_the_ruleset_is_kept_while_its_generation_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = ruleset(), ruleset()
    reads, gens, calls = reads_with(monkeypatch, [first, second])
    assert netfilter.ruleset(reads, NS) is first
    assert netfilter.ruleset(reads, NS) is first and len(calls) == 1
    gens.value = 6  # a transaction: read afresh, not from the ttl's copy
    assert netfilter.ruleset(reads, NS) is second and len(calls) == 2


def test_without_a_generation_reads_are_kept_for_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    first = ruleset()
    reads, gens, calls = reads_with(monkeypatch, [first])
    gens.value = None
    assert netfilter.ruleset(reads, NS) is first
    assert netfilter.ruleset(reads, NS) is first and len(calls) == 1  # the ttl's copy


def test_a_ruleset_whose_sets_change_by_themselves_is_not_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reads, gens, calls = reads_with(monkeypatch, [ruleset(volatile=True), ruleset()])
    netfilter.ruleset(reads, NS)
    netfilter.ruleset(reads, NS)  # same generation, but volatile: only the ttl keeps it
    assert len(calls) == 2


@pytest.mark.parametrize("item,volatile", [
    ({"set": {"family": "inet", "table": "t", "name": "s", "flags": ["dynamic"]}}, True),
    ({"set": {"family": "inet", "table": "t", "name": "s", "flags": "timeout"}}, True),
    ({"set": {"family": "inet", "table": "t", "name": "s", "timeout": 60}}, True),
    ({"set": {"family": "inet", "table": "t", "name": "s", "flags": ["interval"],
              "elem": ["10.0.0.1"]}}, False),
    ({"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 3, "expr": [
        {"set": {"op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}},
                 "set": "@seen"}}]}}, True),
    ({"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 3, "expr": [
        {"match": {"op": "in", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                   "right": "@blocked"}}, {"drop": None}]}}, False),
])
def test_volatile_sets(item: dict[str, Any], volatile: bool) -> None:
    assert nftrules.Ruleset.from_json({"nftables": [item]}).volatile is volatile

