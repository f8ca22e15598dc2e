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


# --- modules: names come from the module list of the same moment -----------------------

MODULES_61 = """\
nf_tables 311296 3 nft_compat, Live 0xffffffffc0001000
virtio_net 65536 0 - Live 0xffffffffc0100000
"""


def test_module_spans_bound_module_names() -> None:
    """An address past the last known symbol of one module, in memory of a module this
    table does not know (loaded since), is unknown, not that symbol plus a large offset."""
    ks = Kallsyms.parse(SAMPLE, MODULES_61)
    assert ks.modules is not None and set(ks.modules) == {"nf_tables", "virtio_net"}
    assert str(ks.lookup(0xFFFFFFFFC0001810)) == "nft_other+0x10 [nf_tables]"
    inside = 0xFFFFFFFFC0001000 + 311296 - 1
    assert ks.lookup(inside).symbol == "nft_other"
    later = 0xFFFFFFFFC0200000  # a module loaded after this copy was taken
    loc = ks.lookup(later)
    assert (loc.symbol, loc.module) == (None, None) and str(loc) == "0xffffffffc0200000 [?]"
    # without a module list the old behaviour (nearest symbol) is all there is
    assert Kallsyms.parse(SAMPLE).lookup(later).symbol == "nft_other"


def test_a_module_gone_from_the_list_names_nothing() -> None:
    """After an unload the module's symbols may linger in an old copy: with the current
    module list, its former addresses are unknown."""
    ks = Kallsyms.parse(SAMPLE, "virtio_net 65536 0 - Live 0xffffffffc0100000\n")
    assert str(ks.lookup(0xFFFFFFFFC0001010)) == "0xffffffffc0001010 [?]"


def test_past_core_text_without_a_module_is_unknown(ks: Kallsyms) -> None:
    assert str(ks.lookup(0xFFFFFFFF81400010)) == "0xffffffff81400010 [?]"


def test_parse_modules_skips_junk() -> None:
    from kdbg.symbols.kallsyms import parse_modules

    spans = parse_modules(MODULES_61 + "garbage\nx 12 0 - Loading 0x0000000000000000\n")
    assert [(m.name, m.start, m.size) for m in spans] == [
        ("nf_tables", 0xFFFFFFFFC0001000, 311296), ("virtio_net", 0xFFFFFFFFC0100000, 65536)]


def test_a_copy_is_loaded_with_its_module_list(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "k.txt").write_text(SAMPLE)
    assert Kallsyms.load(tmp_path / "k.txt").modules is None
    (tmp_path / "k.modules").write_text(MODULES_61)
    ks = Kallsyms.load(tmp_path / "k.txt")
    assert ks.modules is not None and "nf_tables" in ks.modules
    assert ks.lookup(0xFFFFFFFFC0200000).symbol is None


def test_live_table_follows_module_loads_and_unloads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kdbg.symbols.kallsyms import LiveKallsyms

    ks, mods = tmp_path / "kallsyms", tmp_path / "modules"
    core = SAMPLE.split("ffffffffc0001000")[0]
    ks.write_text(core)
    mods.write_text("")
    live = LiveKallsyms(ks, mods, every=0.0)
    addr = 0xFFFFFFFFC0001010
    assert str(live.lookup(addr)) == "0xffffffffc0001010 [?]"
    ks.write_text(SAMPLE)  # nf_tables loads
    mods.write_text(MODULES_61)
    assert str(live.lookup(addr)) == "nft_do_chain+0x10 [nf_tables]"
    assert live.lookup(0xFFFFFFFF81200A4C).symbol == "tcp_v4_rcv"
    ks.write_text(core)  # and goes
    mods.write_text("")
    assert str(live.lookup(addr)) == "0xffffffffc0001010 [?]"
    # A name it has is checked at most once per `every`; an address it cannot name (a
    # module loaded since the table was read, maybe) at once.
    slow = LiveKallsyms(ks, mods, every=3600.0, unknown_every=0.0)
    assert slow.lookup(0xFFFFFFFF81200A4C).symbol == "tcp_v4_rcv"
    ks.write_text(SAMPLE)
    mods.write_text(MODULES_61)
    assert str(slow.lookup(addr)) == "nft_do_chain+0x10 [nf_tables]"
    ks.write_text(core)  # nf_tables goes: its stale name stays until `every` has passed
    mods.write_text("")
    assert slow.lookup(addr).symbol == "nft_do_chain"
    rare = LiveKallsyms(ks, mods, every=3600.0, unknown_every=3600.0)
    ks.write_text(SAMPLE)
    mods.write_text(MODULES_61)
    assert rare.lookup(addr).symbol is None  # not looked at again within the hour
