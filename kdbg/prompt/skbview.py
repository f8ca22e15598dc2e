"""What gdb's ``kdbg-skb`` prints about an ``struct sk_buff``, from what it read.

gdb reads the fields with the kernel's own DWARF types into a :class:`SkbMemory`
(numbers and the bytes at the network header, nothing decoded); :func:`describe` turns
that into text, here, so it is tested on memory recorded from a real stop
(``tests/data/prompt/``). ``kdbg-skb --record FILE`` writes such a recording
(:func:`recording`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdbg.trace.headers import parse_headers

# skb->_nfct holds an nf_conn pointer with enum ip_conntrack_info in its low 3 bits
# (include/linux/skbuff.h NFCT_INFOMASK; values from include/uapi/linux/netfilter/
# nf_conntrack_common.h).
NFCT_INFOMASK = 7
CTINFO = {0: "ESTABLISHED", 1: "RELATED", 2: "NEW", 3: "ESTABLISHED_REPLY",
          4: "RELATED_REPLY", 7: "UNTRACKED"}
REASON_PREFIX = "SKB_DROP_REASON_"
_HEX_FIELDS = ("address", "sk", "nfct")  # written as hex strings in JSON


@dataclass(frozen=True)
class SkbMemory:
    """One sk_buff as gdb read it. None: the field was not read (``notes`` says why)."""

    address: int
    len: int | None = None
    data_len: int | None = None
    mark: int | None = None
    protocol: int | None = None  # skb->protocol as x86 reads the __be16 (bytes swapped)
    ifname: str | None = None
    ifindex: int | None = None
    netns: int | None = None  # the namespace's inode (net->ns.inum)
    netns_via: str | None = None  # "device" (dev_net(skb->dev)) or "socket" (skb->sk)
    sk: int | None = None
    nfct: int | None = None  # skb->_nfct
    ct_status: int | None = None  # the nf_conn's status bits
    header: bytes = b""  # from skb->head + skb->network_header
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: addresses and the header in hex."""
        rec: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            hexed = k in _HEX_FIELDS and v is not None
            rec[k] = f"0x{v:x}" if hexed else v
        return {**rec, "header": self.header.hex(), "notes": list(self.notes)}

    @classmethod
    def from_json(cls, rec: Mapping[str, Any]) -> SkbMemory:
        """The memory of a :meth:`to_json` record."""
        rest: dict[str, Any] = {k: (int(v, 16) if k in _HEX_FIELDS and v is not None else v)
                                for k, v in rec.items() if k not in ("header", "notes")}
        return cls(**rest, header=bytes.fromhex(rec.get("header", "")),
                   notes=tuple(rec.get("notes", ())))



@dataclass(frozen=True)
class DropReason:
    """A drop reason's name (``NETFILTER_DROP``) and where it came from."""

    name: str
    origin: str

    @property
    def short(self) -> str:
        return self.name.removeprefix(REASON_PREFIX)


def ethertype(protocol: int) -> int:
    """The host-order ethertype of skb->protocol read as a little-endian u16."""
    return ((protocol & 0xFF) << 8) | (protocol >> 8)


def conntrack(nfct: int | None, status: int | None,
              status_bits: Mapping[int, str]) -> str:
    """skb->_nfct in words: the ctinfo, the nf_conn and its status bits by name."""
    if nfct is None:
        return "not read"
    if nfct == 0:
        return "none (skb->_nfct is 0: conntrack did not see this packet)"
    info, ct = nfct & NFCT_INFOMASK, nfct & ~NFCT_INFOMASK
    text = f"{CTINFO.get(info, '?')} (ctinfo {info})"
    if ct == 0:
        return text
    text += f", nf_conn 0x{ct:x}"
    if status is not None:
        names = [status_bits.get(bit, f"bit{bit}") for bit in range(64) if status >> bit & 1]
        text += f", status {'|'.join(names) or '0'} (0x{status:x})"
    return text


def _endpoint(addr: str, port: int | None) -> str:
    host = f"[{addr}]" if ":" in addr and port is not None else addr
    return host if port is None else f"{host}:{port}"


def packet(mem: SkbMemory) -> str | None:
    """``udp 127.0.0.1:34275 -> 127.0.0.1:5555``, from the headers; None if unparsed."""
    if not mem.header:
        return None
    h = parse_headers(mem.header, ethertype(mem.protocol or 0))
    if "saddr" not in h:
        return None
    return (f"{h.get('proto', '?')} {_endpoint(h['saddr'], h.get('sport'))} -> "
            f"{_endpoint(h['daddr'], h.get('dport'))}")


def describe(mem: SkbMemory, *, reason: DropReason | None = None,
             status_bits: Mapping[int, str] | None = None) -> list[str]:
    """The lines ``kdbg-skb`` prints."""
    pkt = packet(mem)
    head = f"skb 0x{mem.address:x}"
    lines = [head + (f": {pkt}" if pkt else "") + (f", len {mem.len}" if mem.len is not None
                                                    else "")]

    def row(name: str, value: str) -> None:
        lines.append(f"  {name:<10} {value}")

    if mem.ifname is not None or mem.ifindex is not None:
        row("device", f"{mem.ifname or '?'} (ifindex {mem.ifindex})")
    else:
        row("device", "none (skb->dev is NULL)")
    if mem.netns is not None:
        row("netns", f"{mem.netns} (of the {mem.netns_via})")
    if mem.protocol is not None:
        family = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp"}.get(ethertype(mem.protocol))
        row("protocol", f"{family or '?'} (ethertype 0x{ethertype(mem.protocol):04x})")
    row("packet", pkt or (f"headers not decoded ({len(mem.header)} bytes read)"))
    if mem.len is not None:
        linear = mem.len - (mem.data_len or 0)
        row("length", f"{mem.len} ({linear} in the linear part)")
    if mem.mark is not None:
        row("mark", f"0x{mem.mark:x}")
    row("conntrack", conntrack(mem.nfct, mem.ct_status, status_bits or {}))
    if mem.sk:
        row("socket", f"0x{mem.sk:x}")
    if reason is not None:
        row("reason", f"{reason.short} ({reason.origin})")
    for note in mem.notes:
        row("note", note)
    return lines


def recording(mem: SkbMemory, reason: DropReason | None,
              status_bits: Mapping[int, str]) -> dict[str, Any]:
    """What ``kdbg-skb --record`` writes: everything :func:`describe` needs."""
    return {"memory": mem.to_json(),
            "reason": None if reason is None else {"name": reason.name, "origin": reason.origin},
            "status_bits": {str(k): v for k, v in sorted(status_bits.items())}}


def replay(path: str | Path) -> list[str]:
    """The lines of a recording, as ``kdbg-skb`` printed them at the stop."""
    rec = json.loads(Path(path).read_text())
    reason = DropReason(**rec["reason"]) if rec.get("reason") else None
    bits = {int(k): v for k, v in rec.get("status_bits", {}).items()}
    return describe(SkbMemory.from_json(rec["memory"]), reason=reason, status_bits=bits)
