"""The BTF reader, on a blob built here byte by byte (the kernel's own is in tests/kernel)."""

from __future__ import annotations

import struct

import pytest

from kdbg.errors import BtfError
from kdbg.symbols import btf as B
from kdbg.symbols.btf import Btf


class Builder:
    """Writes the BTF wire format: header, type records, string table."""

    def __init__(self) -> None:
        self.strs = bytearray(b"\0")
        self.types = bytearray()
        self.next_id = 1

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strs)
        self.strs += name.encode() + b"\0"
        return off

    def add(self, name: str, kind: int, vlen: int, size_or_type: int, extra: bytes = b"",
            kflag: bool = False) -> int:
        info = (kind << 24) | vlen | (int(kflag) << 31)
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name: str, size: int) -> int:
        return self.add(name, B.KIND_INT, 0, size, struct.pack("<I", size * 8))

    def struct_(self, name: str, size: int, members: list[tuple[str, int, int]],
                kind: int = B.KIND_STRUCT) -> int:
        extra = b"".join(struct.pack("<III", self.s(n), t, bits) for n, t, bits in members)
        return self.add(name, kind, len(members), size, extra)

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", B.BTF_MAGIC, 1, 0, 24, 0, len(self.types),
                          len(self.types), len(self.strs))
        return hdr + bytes(self.types) + bytes(self.strs)


@pytest.fixture
def btf() -> Btf:
    b = Builder()
    u16 = b.int_("unsigned short", 2)
    u32 = b.int_("unsigned int", 4)
    char = b.int_("char", 1)
    fwd_net = b.add("net", B.KIND_FWD, 0, 0)
    net_ptr = b.add("", B.KIND_PTR, 0, fwd_net)
    possible = b.struct_("", 8, [("net", net_ptr, 0)])
    possible_t = b.add("possible_net_t", B.KIND_TYPEDEF, 0, possible)
    name_arr = b.add("", B.KIND_ARRAY, 0, 0, struct.pack("<III", char, u32, 16))
    dev = b.struct_("net_device", 64, [("ifindex", u32, 0), ("name", name_arr, 64 * 8 // 2),
                                       ("nd_net", possible_t, 16 * 8)])
    dev_ptr = b.add("", B.KIND_PTR, 0, dev)
    # struct sk_buff { union { struct { void *next; struct net_device *dev; }; }; ...
    inner = b.struct_("", 16, [("next", net_ptr, 0), ("dev", dev_ptr, 64)])
    union = b.struct_("", 16, [("", inner, 0)], kind=B.KIND_UNION)
    headers = b.struct_("", 4, [("transport_header", u16, 0), ("network_header", u16, 16)])
    skb = b.struct_("sk_buff", 200, [("", union, 0), ("len", u32, 128), ("", headers, 178 * 8)])
    ns_common = b.struct_("ns_common", 32, [("inum", u32, 24 * 8)])
    b.struct_("net", 256, [("ns", ns_common, 152 * 8)])
    enum_extra = struct.pack("<Ii", b.s("SKB_DROP_REASON_NOT_SPECIFIED"), 2) + struct.pack(
        "<Ii", b.s("SKB_DROP_REASON_NO_SOCKET"), 3)
    b.add("skb_drop_reason", B.KIND_ENUM, 2, 4, enum_extra)
    skb_ptr = b.add("", B.KIND_PTR, 0, skb)
    proto = b.add("", B.KIND_FUNC_PROTO, 1, u32, struct.pack("<II", b.s("skb"), skb_ptr))
    b.add("tcp_v4_rcv", B.KIND_FUNC, 0, proto)
    return Btf(b.blob(), source="test")


def test_fields_through_anonymous_members(btf: Btf) -> None:
    assert btf.field("sk_buff.dev").offset == 8
    assert btf.field("sk_buff.dev").type_name == "struct net_device *"
    assert btf.field("sk_buff.len").offset == 16
    assert btf.field("sk_buff.network_header").offset == 180
    assert btf.field("sk_buff.transport_header").size == 2


def test_nested_embedded_fields(btf: Btf) -> None:
    assert btf.field("net_device.nd_net.net").offset == 16
    assert btf.field("net.ns.inum").offset == 176
    f = btf.field("net_device.name")
    assert (f.offset, f.size, f.type_name) == (32, 16, "char[16]")


def test_enum_and_function_prototype(btf: Btf) -> None:
    assert btf.enum("skb_drop_reason") == {"SKB_DROP_REASON_NOT_SPECIFIED": 2,
                                           "SKB_DROP_REASON_NO_SOCKET": 3}
    params = btf.func_params("tcp_v4_rcv")
    assert [(p.name, p.type_name) for p in params] == [("skb", "struct sk_buff *")]


def test_missing_member_and_bad_magic(btf: Btf) -> None:
    with pytest.raises(BtfError, match="no member"):
        btf.field("sk_buff.nope")
    with pytest.raises(BtfError, match="not BTF"):
        Btf(b"\0" * 32)
