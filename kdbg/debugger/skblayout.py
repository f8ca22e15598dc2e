"""Reading the skb at a stop with a few memory reads.

gdb's expressions on ``struct sk_buff`` cost 30-100 ms each under TCG on 6.12's
vmlinux (the type looked up again each time), and the very first one, expanding the
type's DWARF, 26-51 s. So a break-watch asks gdb once, before any stop, where the
fields lie (:func:`read_layout`: offsets and sizes from the vmlinux's DWARF, and the
drop reasons' names), and a stop then reads the skb, its device, the device's
namespace and the packet's headers as raw bytes (:func:`read_skb_with`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kdbg.debugger.inspection import Inspection
from kdbg.debugger.skb import SkbInfo, read_reason, read_skb
from kdbg.errors import GdbError
from kdbg.symbols.dropargs import DROP_ARGS
from kdbg.trace.headers import parse_headers

# (name, type, member, size kdbg decodes it as)
FIELDS = (
    ("len", "struct sk_buff", "len", 4),
    ("head", "struct sk_buff", "head", 8),
    ("network_header", "struct sk_buff", "network_header", 2),
    ("protocol", "struct sk_buff", "protocol", 2),
    ("dev", "struct sk_buff", "dev", 8),
    ("dev_name", "struct net_device", "name", 16),
    ("dev_net", "struct net_device", "nd_net.net", 8),  # CONFIG_NET_NS
    ("net_inum", "struct net", "ns.inum", 4),
)
SKB_FIELDS = ("len", "head", "network_header", "protocol", "dev")

# gdb's Python, run as one command: {name: [offset, size] or null} for FIELDS, and
# the drop reasons' names by value.
_CODE = """import json
P = gdb.parse_and_eval
def _f(t, m):
    try:
        return [int(P(f'(unsigned long)&(({t} *)0)->{m}')), int(P(f'sizeof((({t} *)0)->{m})'))]
    except gdb.error:
        return None
def _r():
    try:
        return {int(f.enumval): f.name for f in gdb.lookup_type('enum skb_drop_reason').fields()}
    except gdb.error:
        return {}
print(json.dumps({'fields': {n: _f(t, m) for n, t, m in %s}, 'reasons': _r()}))
"""


@dataclass(frozen=True)
class SkbLayout:
    """Offsets of the fields :data:`FIELDS` names (None: the kernel has no such field),
    and the drop reasons' names by value (without ``SKB_DROP_REASON_``)."""

    offsets: dict[str, int | None]
    reasons: dict[int, str]

    @classmethod
    def from_gdb(cls, reply: dict[str, Any]) -> SkbLayout | None:
        """The layout gdb's answer to :data:`_CODE` gives; None when an skb field is
        missing or not of the size kdbg decodes (then gdb's expressions read it)."""
        fields = reply.get("fields", {})
        offsets: dict[str, int | None] = {}
        for name, _, _, size in FIELDS:
            got = fields.get(name)
            ok = isinstance(got, list) and len(got) == 2 and got[1] == size
            if not ok and name in (*SKB_FIELDS, "dev_name"):
                return None
            offsets[name] = got[0] if ok else None
        reasons = {int(k): str(v).removeprefix("SKB_DROP_REASON_")
                   for k, v in reply.get("reasons", {}).items()}
        return cls(offsets, reasons)

    def at(self, name: str) -> int:
        off = self.offsets[name]
        assert off is not None
        return off


def read_layout(inspect: Inspection, timeout: float = 300.0) -> SkbLayout | None:
    """Ask gdb where the skb's fields lie (reads only the vmlinux: the target may run);
    None without a DWARF vmlinux or when gdb cannot say."""
    if inspect.state.vmlinux is None:
        return None
    code = _CODE % repr([(n, t, m) for n, t, m, _ in FIELDS])
    try:
        text = inspect.gdb.console(f"python exec({json.dumps(code)})", timeout)
        return SkbLayout.from_gdb(json.loads(text.strip().splitlines()[-1]))
    except (GdbError, ValueError, IndexError):
        return None


def _u(data: bytes, off: int, size: int) -> int:
    return int.from_bytes(data[off:off + size], "little")


def read_skb_with(inspect: Inspection, layout: SkbLayout, addr: int,
                  timeout: float = 10.0) -> SkbInfo:
    """The skb at ``addr`` read as raw memory where ``layout`` says its fields are."""
    try:
        offs = [layout.at(n) for n in SKB_FIELDS]
        lo, hi = min(offs), max(offs) + 8
        raw = inspect.read_memory(addr + lo, hi - lo, timeout)
        get = {n: _u(raw, layout.at(n) - lo, size)
               for n, _, _, size in FIELDS if n in SKB_FIELDS}
        ifname = netns = None
        dev = get["dev"]
        if dev:
            name = inspect.read_memory(dev + layout.at("dev_name"), 16, timeout)
            ifname = name.split(b"\0", 1)[0].decode(errors="replace")
            net_off, inum_off = layout.offsets["dev_net"], layout.offsets["net_inum"]
            if net_off is not None and inum_off is not None:
                net = _u(inspect.read_memory(dev + net_off, 8, timeout), 0, 8)
                if net:
                    netns = _u(inspect.read_memory(net + inum_off, 4, timeout), 0, 4)
        proto = get["protocol"]
        ethertype = ((proto & 0xFF) << 8) | (proto >> 8)  # __be16 as read on x86
        fields: dict[str, Any] = {}
        if get["head"] and get["network_header"] != 0xFFFF:
            fields = parse_headers(
                inspect.read_memory(get["head"] + get["network_header"], 64, timeout),
                ethertype)
        return SkbInfo(addr, len=get["len"], ifname=ifname, netns=netns, **fields)
    except (GdbError, ValueError) as err:
        return SkbInfo(addr, note=f"could not read the skb: {err}")


def read_at_stop(inspect: Inspection, layout: SkbLayout | None,
                 callee: str) -> tuple[SkbInfo | None, str | None]:
    """At a stop on the call to ``callee``: the skb passed to it and the drop reason
    (one register read, then ``layout``'s memory reads; gdb's expressions without a
    layout). (None, None) when ``callee`` is no drop function."""
    if layout is None:
        return read_skb(inspect, callee), read_reason(inspect, callee)
    args = DROP_ARGS.get(callee)
    if args is None:
        return None, None
    skb_i, reason_i = args
    regs = inspect.read_args(max(skb_i, reason_i or 0) + 1)
    reason = None
    if reason_i is not None:
        reason = layout.reasons.get(regs[reason_i] & 0xFFFF_FFFF)
    return read_skb_with(inspect, layout, regs[skb_i]), reason
