"""The hit reported at the stop: the skb's fields and the drop reason as gdb reads them,
with its expressions (read_skb, read_reason) or as raw memory where the layout gdb gave
once says (read_at_stop), against gdb's answers recorded at a real stop in the lab
(6.1, nft_do_chain's call to kfree_skb_reason, a 6-byte UDP datagram to 127.0.0.1:5555)."""

from __future__ import annotations

import json
from typing import Any

from kdbg.debugger.skb import SkbInfo, read_reason, read_skb
from kdbg.debugger.skblayout import SkbLayout, read_at_stop
from kdbg.errors import GdbError

SKB, DEV, HEAD = 0xFF11000006F3E800, 0xFF1100000519E000, 18379471554438476288
S = f"((struct sk_buff *)0x{SKB:x})"
N = f"((struct net_device *)0x{DEV:x})"
# what gdb printed for each expression at that stop (rdi = the skb, rsi = 7)
ANSWERS = {
    f"{S}->len": "34",
    f"(unsigned long){S}->head": str(HEAD),
    f"{S}->network_header": "16",
    f"{S}->protocol": "8",
    f"(unsigned long){S}->dev": str(DEV),
    f"{N}->name": "\"lo\", '\\000' <repeats 13 times>",
    f"{N}->nd_net.net->ns.inum": "4026531840",
    "(enum skb_drop_reason)7": "SKB_DROP_REASON_NETFILTER_DROP",
}
PACKET = bytes.fromhex("4500002285ac40004011b71c7f0000017f000001c57c15b3000efe2168656c6c6f0a"
                       + "00" * 30)


class State:
    vmlinux = "/x/vmlinux-6.1.0-57-amd64"


class GdbAtTheStop:
    """Inspection as the recorded stop answers it; ``missing`` expressions fail as gdb's
    do (a kernel without the field)."""

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.state = State()
        self.missing = missing
        self.asked: list[str] = []

    def read_args(self, count: int = 6) -> list[int]:
        return [SKB, 7, 0, 0, 0, 0][:count]

    def evaluate(self, expr: str, timeout: float = 10.0) -> str:
        self.asked.append(expr)
        if any(m in expr for m in self.missing):
            raise GdbError("There is no member named nd_net.")
        return ANSWERS[expr]

    def read_memory(self, addr: int, length: int, timeout: float = 10.0) -> bytes:
        assert addr == HEAD + 16
        return PACKET[:length]


def test_gdb_reads_the_skb_its_device_and_netns() -> None:
    skb = read_skb(GdbAtTheStop(), "kfree_skb_reason")  # type: ignore[arg-type]
    assert skb == SkbInfo(SKB, len=34, ifname="lo", family="ipv4", proto="udp",
                          saddr="127.0.0.1", daddr="127.0.0.1", sport=50556, dport=5555,
                          netns=4026531840)
    assert skb.summary() == ("skb 0xff11000006f3e800, len 34, dev lo, netns 4026531840, "
                             "udp 127.0.0.1:50556 -> 127.0.0.1:5555")


def test_a_kernel_without_the_netns_field_still_gives_the_rest() -> None:
    skb = read_skb(GdbAtTheStop(missing=("nd_net",)), "kfree_skb_reason")  # type: ignore[arg-type]
    assert skb is not None and skb.netns is None and skb.dport == 5555 and skb.note is None


def test_the_reason_is_named_as_the_tracer_names_it() -> None:
    gdb = GdbAtTheStop()
    assert read_reason(gdb, "kfree_skb_reason") == "NETFILTER_DROP"  # type: ignore[arg-type]
    assert gdb.asked == ["(enum skb_drop_reason)7"]
    # kfree_skb takes no reason; a reason gdb cannot name is left out
    assert read_reason(gdb, "kfree_skb") is None  # type: ignore[arg-type]
    assert read_reason(GdbAtTheStop(missing=("enum",)), "kfree_skb_reason") is None  # type: ignore[arg-type]


def test_gdbs_read_and_the_tracers_are_compared_field_by_field() -> None:
    gdb = SkbInfo(SKB, len=34, ifname="lo", saddr="127.0.0.1", dport=5555, netns=1)
    tracer = SkbInfo(SKB, len=34, ifname="lo", saddr="127.0.0.1", dport=5555, netns=1,
                     proto="udp")
    assert gdb.differences(tracer) == []  # what only one side knows is no difference
    other: Any = SkbInfo(SKB, len=35, ifname="lo", dport=5556)
    assert gdb.differences(other) == ["len 34 != 35", "dport 5555 != 5556"]


# -- with the layout gdb gave once (kdbg.debugger.skblayout) ---------------------------

# gdb's answer to skblayout's script on the 6.1 lab's vmlinux (reasons cut to 0-8)
LAYOUT_61 = json.loads(
    '{"fields": {"len": [112, 4], "head": [200, 8], "network_header": [184, 2], '
    '"protocol": [180, 2], "dev": [16, 8], "dev_name": [0, 16], "dev_net": [1280, 8], '
    '"net_inum": [144, 4]}, "reasons": {"0": "SKB_NOT_DROPPED_YET", '
    '"1": "SKB_DROP_REASON_NOT_SPECIFIED", "2": "SKB_DROP_REASON_NO_SOCKET", '
    '"3": "SKB_DROP_REASON_PKT_TOO_SMALL", "4": "SKB_DROP_REASON_TCP_CSUM", '
    '"5": "SKB_DROP_REASON_SOCKET_FILTER", "6": "SKB_DROP_REASON_UDP_CSUM", '
    '"7": "SKB_DROP_REASON_NETFILTER_DROP", "8": "SKB_DROP_REASON_OTHERHOST"}}')
NET = 0xFFFFFFFF838B6500


class Memory:
    """The target's memory at that stop, laid out as the 6.1 layout says: the skb's
    fields (the values gdb's expressions gave above), its device, namespace, packet."""

    def __init__(self, dev: int = DEV) -> None:
        self.state = State()
        self.mem: dict[int, int] = {}
        self.reads: list[tuple[int, int]] = []
        f = LAYOUT_61["fields"]
        for name, value in [("len", 34), ("head", HEAD), ("network_header", 16),
                            ("protocol", 8), ("dev", dev)]:
            self.put(SKB + f[name][0], value.to_bytes(f[name][1], "little"))
        self.put(DEV + f["dev_name"][0], b"lo".ljust(16, b"\0"))
        self.put(DEV + f["dev_net"][0], NET.to_bytes(8, "little"))
        self.put(NET + f["net_inum"][0], (4026531840).to_bytes(4, "little"))
        self.put(HEAD + 16, PACKET)

    def put(self, addr: int, data: bytes) -> None:
        for i, b in enumerate(data):
            self.mem[addr + i] = b

    def read_args(self, count: int = 6) -> list[int]:
        return [SKB, 7, 0, 0, 0, 0][:count]

    def read_memory(self, addr: int, length: int, timeout: float = 10.0) -> bytes:
        self.reads.append((addr, length))
        if addr not in self.mem:
            raise GdbError(f"Cannot access memory at address 0x{addr:x}")
        return bytes(self.mem.get(addr + i, 0) for i in range(length))


def test_the_layout_from_gdbs_answer() -> None:
    layout = SkbLayout.from_gdb(LAYOUT_61)
    assert layout is not None and layout.offsets["dev_net"] == 1280
    assert layout.reasons[7] == "NETFILTER_DROP" and layout.reasons[0] == "SKB_NOT_DROPPED_YET"
    # an skb field missing or of another size: no layout (gdb's expressions read it)
    for bad in ({"len": None}, {"len": [112, 8]}):
        assert SkbLayout.from_gdb({**LAYOUT_61,
                                   "fields": LAYOUT_61["fields"] | bad}) is None
    # a kernel without network namespaces still reads the rest
    no_ns = SkbLayout.from_gdb({**LAYOUT_61, "fields": LAYOUT_61["fields"] | {"dev_net": None}})
    assert no_ns is not None and no_ns.offsets["dev_net"] is None


def test_a_stop_reads_the_skb_with_five_memory_reads() -> None:
    layout = SkbLayout.from_gdb(LAYOUT_61)
    mem = Memory()
    skb, reason = read_at_stop(mem, layout, "kfree_skb_reason")  # type: ignore[arg-type]
    assert reason == "NETFILTER_DROP"
    assert skb == read_skb(GdbAtTheStop(), "kfree_skb_reason")  # type: ignore[arg-type]
    # the skb's fields in one read (from dev at +16 to head's end at +208), then the
    # device's name, its namespace pointer, the namespace's inode, the headers
    assert mem.reads == [(SKB + 16, 192), (DEV, 16), (DEV + 1280, 8), (NET + 144, 4),
                         (HEAD + 16, 64)]


def test_an_unreadable_skb_says_so() -> None:
    layout = SkbLayout.from_gdb(LAYOUT_61)
    mem = Memory(dev=0xFF11000000001000)  # a device pointer to memory gdb cannot read
    skb, _ = read_at_stop(mem, layout, "kfree_skb_reason")  # type: ignore[arg-type]
    assert skb is not None and skb.address == SKB and skb.len is None
    assert skb.note is not None and skb.note.startswith("could not read the skb: Cannot access")
    assert read_at_stop(mem, layout, "consume_skb") == (None, None)  # no drop function
