"""The generated path program: hooks per tracepoint, filters, golden file (no root)."""

from __future__ import annotations

import ipaddress
import os

import pytest

from kdbg.path import program
from kdbg.symbols import tpformat
from kdbg.trace import filters as flt
from kdbg.trace.hops import HOP_TRACEPOINTS
from tests.conftest import DATA

PATH_DATA = DATA / "path"
OFFSETS_6_18 = {  # as read from this project's 6.18 development kernel's BTF
    "SKB_DEV": 16, "SKB_SK": 24, "SKB_HEAD": 192, "SKB_DATA": 200, "SKB_PROTOCOL": 176,
    "SKB_NETWORK_HDR": 180, "SKB_TRANSPORT_HDR": 178, "SKB_LEN": 112, "DEV_IFINDEX": 224,
    "DEV_NAME": 280, "DEV_NET": 264, "SK_NET": 48, "NET_INUM": 176,
}


def fmt(name: str, text: str | None = None) -> tpformat.TpFormat:
    system = "skb" if name in ("consume_skb", "kfree_skb") else "net"
    if text is None:
        path = DATA / "kfree_skb.format.6.18" if name == "kfree_skb" else \
            PATH_DATA / f"{name}.format.6.18"
        text = path.read_text()
    return tpformat.parse(text, system, name)


def formats_6_18(hops: tuple[str, ...] | None = None) -> program.PathFormats:
    names = hops or tuple(n for _s, n, _i, _rx in HOP_TRACEPOINTS)
    return program.PathFormats(tuple(fmt(n) for n in names), fmt("kfree_skb"),
                               fmt("consume_skb"))


def spec() -> flt.FilterSpec:
    return flt.FilterSpec(proto="icmp", addrs=(ipaddress.ip_network("10.77.5.2"),),
                          netns=4026532177, ifname="veth-a")


def golden(name: str, text: str) -> None:
    path = PATH_DATA / name
    if os.environ.get("KDBG_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; KDBG_UPDATE_GOLDEN=1 to accept"


def test_golden_filtered_program_6_18() -> None:
    text = program.build(formats_6_18(), OFFSETS_6_18, spec(), (4242,))
    assert "{{" not in text
    golden("path.6.18.filtered.c", text)


def test_one_hook_per_hop_tracepoint_with_its_skbaddr_offset() -> None:
    text = program.build(formats_6_18(), OFFSETS_6_18, flt.FilterSpec())
    assert "KDBG_HOP(net_dev_queue, 8, 1, 0)" in text
    assert "KDBG_HOP(netif_rx, 8, 2, 1)" in text
    # The _entry records carry skbaddr after the device name and napi fields.
    assert "KDBG_HOP(netif_receive_skb_entry, 24, 4, 1)" in text
    assert "KDBG_HOP(napi_gro_receive_entry, 24, 5, 1)" in text


def test_missing_hop_tracepoints_get_no_hook() -> None:
    formats = formats_6_18(("net_dev_queue", "netif_receive_skb"))
    text = program.build(formats, OFFSETS_6_18, flt.FilterSpec())
    assert "KDBG_HOP(netif_rx," not in text
    assert [tp for tp, _fn in formats.attachments()] == [
        "net:net_dev_queue", "net:netif_receive_skb", "skb:kfree_skb", "skb:consume_skb"]
    assert ("net:net_dev_queue", "kdbg_path_net_dev_queue") in formats.attachments()


def test_consume_skb_without_location_field() -> None:
    # consume_skb gained its location field after 6.1; the program must not read it then.
    text = "\n".join(line for line in (PATH_DATA / "consume_skb.format.6.18").read_text()
                     .splitlines() if "location" not in line)
    formats = program.PathFormats(formats_6_18().hops, fmt("kfree_skb"),
                                  fmt("consume_skb", text))
    out = program.build(formats, OFFSETS_6_18, flt.FilterSpec())
    assert "#define TP_CONSUME_LOCATION -1" in out


def test_filters_as_c() -> None:
    assert program.c_icmp_ids(()) == flt.NO_FILTER
    assert program.c_icmp_ids((7, 9)) == (
        "if (!(l4_valid && (l4proto == 1 || l4proto == 58) && (sport == 7 || sport == 9)))"
        " return 0;")
    plain = program.build(formats_6_18(), OFFSETS_6_18, flt.FilterSpec())
    assert plain.count("/* none */") == 2
    text = program.build(formats_6_18(), OFFSETS_6_18, spec(), (4242,))
    assert "if (netns != 4026532177U) return 0;" in text
    assert "if (!(l4proto == 1 && family == 4)) return 0;" in text
    assert "sport == 4242" in text


def test_bad_ring_size() -> None:
    with pytest.raises(ValueError, match="power of two"):
        program.build(formats_6_18(), OFFSETS_6_18, flt.FilterSpec(), (),
                      program.PathOptions(ringbuf_pages=3))
