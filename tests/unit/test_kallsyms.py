from __future__ import annotations

import pytest

from kdbg.errors import BadInput, ProbeUnavailable, UnknownSymbol
from kdbg.symbols.kallsyms import Kallsyms

SAMPLE = """\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81000000 T __pi__text
ffffffff81100000 t ip_rcv_core
ffffffff81100400 T ip_rcv
ffffffff81200000 T tcp_v4_rcv
ffffffff81201000 T tcp_v6_rcv
ffffffff81300000 D some_data
ffffffff81400000 T _etext
ffffffffc0001000 t nft_do_chain\t[nf_tables]
ffffffffc0001800 t nft_other\t[nf_tables]
"""


@pytest.fixture
def ks() -> Kallsyms:
    return Kallsyms.parse(SAMPLE)


def test_lookup_names_symbol_plus_offset(ks: Kallsyms) -> None:
    loc = ks.lookup(0xFFFFFFFF81200A4C)
    assert (loc.symbol, loc.offset, loc.module) == ("tcp_v4_rcv", 0xA4C, None)
    assert str(loc) == "tcp_v4_rcv+0xa4c"


def test_lookup_prefers_global_non_alias_names(ks: Kallsyms) -> None:
    assert ks.lookup(0xFFFFFFFF81000010).symbol == "_stext"


def test_module_symbols_carry_the_module(ks: Kallsyms) -> None:
    loc = ks.lookup(0xFFFFFFFFC0001010)
    assert str(loc) == "nft_do_chain+0x10 [nf_tables]"


def test_addresses_past_etext_outside_modules_are_unknown(ks: Kallsyms) -> None:
    assert ks.lookup(0xFFFFFFFF81400010).symbol is None
    assert ks.lookup(0x1000).symbol is None


def test_resolve_expressions(ks: Kallsyms) -> None:
    r = ks.resolve("tcp_v4_rcv")
    assert (r.start, r.end) == (0xFFFFFFFF81200000, 0xFFFFFFFF81201000)
    r = ks.resolve("tcp_v4_rcv+0x10")
    assert (r.start, r.end, r.label) == (0xFFFFFFFF81200010, 0xFFFFFFFF81200011,
                                         "tcp_v4_rcv+0x10")
    assert 0xFFFFFFFF81200010 in r
    assert ks.resolve("0xffffffff81100404").label == "ip_rcv+0x4"


def test_unknown_symbol_suggests_closest(ks: Kallsyms) -> None:
    with pytest.raises(UnknownSymbol) as err:
        ks.resolve("tcp_v4_rvc")
    assert "tcp_v4_rcv" in str(err.value)
    assert err.value.exit_code == 2


def test_bad_expressions(ks: Kallsyms) -> None:
    with pytest.raises(BadInput):
        ks.resolve("tcp v4")
    with pytest.raises(BadInput):
        ks.resolve("tcp_v4_rcv+0x5000")  # past the end


def test_hidden_addresses_are_refused() -> None:
    with pytest.raises(ProbeUnavailable, match="kptr_restrict"):
        Kallsyms.parse("0000000000000000 T _text\n0000000000000000 T tcp_v4_rcv\n")
