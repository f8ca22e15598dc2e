"""The generated BPF text: rendering rules, filters as C, golden files (no root needed)."""

from __future__ import annotations

import ipaddress
import os

import pytest

from kdbg.symbols.kallsyms import AddressRange
from kdbg.trace import filters as flt
from kdbg.trace.offsets import arg_positions
from kdbg.trace.program import ARG_ROLES, ProgramOptions, build, ct_span
from kdbg.trace.render import RenderError, render
from tests.conftest import DATA

OFFSETS_6_18 = {  # as read from this project's 6.18 development kernel's BTF
    "SKB_DEV": 16, "SKB_SK": 24, "SKB_HEAD": 192, "SKB_NETWORK_HDR": 180,
    "SKB_TRANSPORT_HDR": 178, "SKB_LEN": 112, "DEV_IFINDEX": 224, "DEV_NAME": 280,
    "DEV_NET": 264, "SK_NET": 48, "NET_INUM": 176, "SKB_PROTOCOL": 176,
    "SKB_MARK": 164, "SKB_NFCT": 104, "CT_ZONE_ID": 12, "CT_MARK": 168, "CT_STATUS": 128,
    "CT_TUPLEHASH": 16, "CT_HASH_TUPLE": 16, "CT_TUPLE_DST": 20, "CT_TUPLE_PROTONUM": 38,
    "CT_TUPLE_DIR": 39, "CT_HASH_SIZE": 56,
}
# btf_trace_kfree_skb's arguments after void *__data, as 6.1's and 6.18's BTF give them
PROTO_6_1 = ["struct sk_buff *", "void *", "enum skb_drop_reason"]
PROTO_6_18 = [*PROTO_6_1, "struct sock *"]
ARGS_6_1 = arg_positions(PROTO_6_1, ARG_ROLES)
ARGS_6_18 = arg_positions(PROTO_6_18, ARG_ROLES)


def test_arguments_are_found_by_their_type() -> None:
    assert ARGS_6_18 == {"ARG_SKB": 0, "ARG_LOCATION": 1, "ARG_REASON": 2, "ARG_RX_SK": 3}
    assert ARGS_6_1 == {"ARG_SKB": 0, "ARG_LOCATION": 1, "ARG_REASON": 2, "ARG_RX_SK": -1}
    # Two arguments of one type are told apart by their order.
    assert arg_positions(["void *", "void *"], {"A": "void *", "B": "void *"}) == {
        "A": 0, "B": 1}


def test_render_fills_and_refuses_leftovers() -> None:
    assert render("a {{X}} b {{Y}}", {"X": 1, "Y": "z"}) == "a 1 b z"
    with pytest.raises(RenderError, match="unfilled placeholders: Y"):
        render("{{X}} {{Y}}", {"X": 1})
    with pytest.raises(RenderError, match="values for no placeholder: Z"):
        render("{{X}}", {"X": 1, "Z": 2})


def spec() -> flt.FilterSpec:
    return flt.FilterSpec(
        reasons=(12, 3),
        locations=(AddressRange(0xFFFFFFFF81A00000, 0xFFFFFFFF81A00400, "nft_do_chain"),),
        proto="udp",
        daddrs=(ipaddress.ip_network("10.77.9.0/24"),),
        addrs=(ipaddress.ip_network("fd77:9::2"),),
        dports=(5555,),
        netns=4026532246,
        ifname="veth-b",
    )


def golden(name: str, text: str) -> None:
    path = DATA / "golden" / name
    if os.environ.get("KDBG_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; KDBG_UPDATE_GOLDEN=1 to accept"


def test_golden_filtered_program_6_18() -> None:
    text = build(ARGS_6_18, OFFSETS_6_18, spec(),
                 ProgramOptions(stack=True, stack_reasons=(12,), chains=True, summarize=True,
                                count_stats=False))
    assert "{{" not in text
    golden("kfree_skb.6.18.filtered.c", text)


def test_golden_plain_program_6_1() -> None:
    text = build(ARGS_6_1, OFFSETS_6_18, flt.FilterSpec(), ProgramOptions(stats_only=True))
    assert "#define ARG_RX_SK        -1" in text  # 6.1 passes no rx_sk
    golden("kfree_skb.6.1.plain.c", text)


def test_stacks_only_for_the_reasons_the_causes_read() -> None:
    def wanted(opts: ProgramOptions) -> str:
        text = build(ARGS_6_18, OFFSETS_6_18, flt.FilterSpec(), opts)
        return next(ln for ln in text.splitlines() if ln.startswith("#define STACK_WANTED"))

    assert wanted(ProgramOptions(stack=True)) == "#define STACK_WANTED(reason) (1)"
    assert wanted(ProgramOptions(stack=True, stack_reasons=(12,))) == (
        "#define STACK_WANTED(reason) ((reason) == 12)")
    assert wanted(ProgramOptions(stack=True, stack_reasons=(12, 3, 12))) == (
        "#define STACK_WANTED(reason) ((reason) == 3 || (reason) == 12)")


def test_conntrack_fields_in_one_read_when_they_lie_close() -> None:
    # 6.1's, 6.12's and 6.18's nf_conn (Debian's vmlinux BTF): zone.id at 12, the
    # tuples at 32 and 88 (40 bytes each), status at 128, mark at 168
    assert ct_span(OFFSETS_6_18) == (8, 168)
    # a field missing or far away, or a tuple laid out otherwise: one read per field
    assert ct_span({**OFFSETS_6_18, "CT_MARK": -1}) == (0, 0)
    assert ct_span({**OFFSETS_6_18, "CT_MARK": 400}) == (0, 0)
    assert ct_span({**OFFSETS_6_18, "CT_HASH_SIZE": -1}) == (0, 0)
    assert ct_span({**OFFSETS_6_18, "CT_TUPLE_DIR": 40}) == (0, 0)
    far = build(ARGS_6_18, {**OFFSETS_6_18, "CT_MARK": 400}, flt.FilterSpec(),
                ProgramOptions())
    assert "#define CT_SPAN_LEN      0" in far


def test_ringbuf_pages_must_be_power_of_two() -> None:
    with pytest.raises(ValueError):
        build(ARGS_6_18, OFFSETS_6_18, flt.FilterSpec(), ProgramOptions(ringbuf_pages=100))


def test_network_match_constants() -> None:
    # 10.77.9.0/24: the first word as loaded on a little-endian CPU, masked to 24 bits
    c = flt._net_match("d", ipaddress.ip_network("10.77.9.0/24"))
    # ARP's sender and target (family 3) are IPv4 addresses too, as in a pcap "host"
    assert c == "((family == 4 || family == 3) && (d[0] & 0x00ffffff) == 0x00094d0a)"
    c = flt._net_match("s", ipaddress.ip_network("fd77:9::/32"))
    assert c == "(family == 6 && (s[0] & 0xffffffff) == 0x090077fd)"


def test_filters_without_values_emit_nothing() -> None:
    empty = flt.FilterSpec()
    assert flt.c_early(empty) == flt.c_dev(empty) == flt.c_packet(empty) == "/* none */"


def test_ports_only_match_port_protocols() -> None:
    text = flt.c_packet(flt.FilterSpec(dports=(53,)))
    assert "has_ports" in text and "dport == 53" in text


@pytest.mark.parametrize("bad", ["10.0.0.300", "fe80::g", ""])
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(flt.BadInput):
        flt.parse_network(bad)


def test_netns_spellings(tmp_path: pytest.TempPathFactory) -> None:
    assert flt.parse_netns("4026531840") == 4026531840
    assert flt.parse_netns("net:[4026531840]") == 4026531840
    assert flt.parse_netns("/proc/self/ns/net") > 0
    with pytest.raises(flt.BadInput, match="no network namespace"):
        flt.parse_netns("kdbg-surely-absent")


def test_port_and_ifname_checks() -> None:
    assert flt.parse_port("5555") == 5555
    for bad in ("70000", "x"):
        with pytest.raises(flt.BadInput):
            flt.parse_port(bad)
    with pytest.raises(flt.BadInput):
        flt.parse_ifname("a-name-that-is-too-long")
