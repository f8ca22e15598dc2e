"""Reason names come from the kernel: parsed from captured format files."""

from __future__ import annotations

import pytest

from kdbg.errors import ProbeUnavailable, UnknownReason
from kdbg.symbols import tpformat
from kdbg.symbols.reasons import ReasonTable
from tests.conftest import DATA


def table(version: str) -> ReasonTable:
    text = (DATA / f"kfree_skb.format.{version}").read_text()
    return ReasonTable.from_tpformat(tpformat.parse(text, "skb", "kfree_skb"))


def test_6_18_fields_and_reasons() -> None:
    fmt = tpformat.parse((DATA / "kfree_skb.format.6.18").read_text())
    assert fmt.name == "kfree_skb"
    assert fmt.field("skbaddr").offset == 8
    assert fmt.field("location").offset == 16
    assert fmt.field("rx_sk").offset == 24  # new in 6.11
    assert fmt.field("reason").offset == 36 and fmt.field("reason").size == 4
    t = table("6.18")
    assert t.code("NO_SOCKET") == 3
    assert t.code("NETFILTER_DROP") == 12
    assert t.name(3) == "NO_SOCKET"


def test_6_1_numbers_differ() -> None:
    t = table("6.1")
    assert t.code("NO_SOCKET") == 2
    assert t.code("NETFILTER_DROP") == 7
    fmt = tpformat.parse((DATA / "kfree_skb.format.6.1").read_text())
    assert "rx_sk" not in fmt.fields


@pytest.mark.parametrize("spelling", ["NETFILTER_DROP", "netfilter_drop",
                                      "SKB_DROP_REASON_NETFILTER_DROP", " Netfilter_Drop "])
def test_name_spellings(spelling: str) -> None:
    assert table("6.18").code(spelling) == 12


def test_unknown_reason_names_closest() -> None:
    with pytest.raises(UnknownReason) as err:
        table("6.18").code("NETFILTR_DROP")
    assert "closest: NETFILTER_DROP" in str(err.value)
    assert err.value.exit_code == 2


def test_unknown_code_is_shown_raw() -> None:
    assert table("6.18").name(0x10002) == "REASON_0x10002"


def test_kernel_without_reason_field() -> None:
    old = """name: kfree_skb
ID: 1
format:
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;

print fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location
"""
    with pytest.raises(ProbeUnavailable, match="5.17"):
        ReasonTable.from_tpformat(tpformat.parse(old))
