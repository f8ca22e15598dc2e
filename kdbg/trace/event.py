"""Drop events: decoded once, at the boundary, into frozen dataclasses.

Nothing downstream of :meth:`Decoder.decode` sees ctypes: bytes become ``str``,
addresses become :mod:`ipaddress` objects, reason codes become the running
kernel's names, and locations become ``symbol+offset``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kdbg.symbols.kallsyms import Kallsyms, Location
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace.bpfverdict import BpfProg
from kdbg.trace.cause import Cause
from kdbg.trace.cttuple import CtTuple, from_raw
from kdbg.trace.filters import PROTO_NAMES
from kdbg.trace.headers import FAMILY_NAMES, IPAddress, addresses, arp_op_name, arp_op_number
from kdbg.trace.journey import Journey
from kdbg.trace.layout import (
    CT_ATTACHED,
    CT_NONE,
    CT_READ,
    CT_REPLY_TUPLE,
    CT_STATUS,
    CT_TUPLE,
    RawDropEvent,
)


@dataclass(frozen=True)
class Frame:
    """One kernel stack frame, named."""

    address: int
    symbol: str | None
    offset: int
    module: str | None = None

    def __str__(self) -> str:
        return str(Location(self.address, self.symbol, self.offset, self.module))


# enum ip_conntrack_info (include/uapi/linux/netfilter/nf_conntrack_common.h): the
# state nftables' 'ct state' tests is ctinfo modulo IP_CT_IS_REPLY (3), as
# NF_CT_STATE_BIT() computes it
CT_STATES = ("established", "related", "new")
IP_CT_IS_REPLY = 3
IP_CT_UNTRACKED = 7


def ct_fields(raw: Any) -> dict[str, Any]:
    """``ct_state``, ``ct_reply``, ``ct_zone`` and ``ct_mark`` from the skb's ``_nfct`` as
    the drop program read it: nftables' names for the state (nft_ct_get_eval: no entry
    is ``invalid``, unless ctinfo says untracked); None for what was not read (a kernel
    without conntrack, conntrack as a module for the zone and mark, a record of layout
    'kdbg_drop_record 1')."""
    out: dict[str, Any] = dict.fromkeys(("ct_state", "ct_reply", "ct_zone", "ct_mark",
                                         "ct_status", "ct_original", "ct_reply_tuple"))
    ctinfo, flags = getattr(raw, "ctinfo", CT_NONE), getattr(raw, "ct", 0)
    if ctinfo == CT_NONE:
        return out
    if not flags & CT_ATTACHED:
        out["ct_state"] = "untracked" if ctinfo == IP_CT_UNTRACKED else "invalid"
        return out
    if ctinfo <= 4:
        out["ct_state"] = CT_STATES[ctinfo % IP_CT_IS_REPLY]
        out["ct_reply"] = ctinfo >= IP_CT_IS_REPLY
    if flags & CT_READ:
        out["ct_zone"], out["ct_mark"] = raw.ct_zone, raw.ct_mark
    if flags & CT_STATUS:  # (a record made before kdbg read it has the bit clear)
        out["ct_status"] = raw.ct_status
    if flags & CT_TUPLE:  # (set only in records of layout 'kdbg_drop_record 3')
        out["ct_original"] = from_raw(raw)
    if flags & CT_REPLY_TUPLE:  # (set only in records of layout 'kdbg_drop_record 4')
        out["ct_reply_tuple"] = from_raw(raw, "ct_reply_")
    return out


@dataclass(frozen=True)
class DropEvent:
    """One dropped packet, as kdbg reports it."""

    time_ns: int
    cpu: int
    pid: int
    tid: int
    comm: str
    reason: str
    reason_code: int
    address: int
    symbol: str | None
    offset: int
    module: str | None
    skb: int
    proto: str | None
    family: str | None
    saddr: IPAddress | None
    daddr: IPAddress | None
    sport: int | None
    dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    netns: int | None
    ifname: str | None
    ifindex: int | None
    len: int
    stack: tuple[Frame, ...] | None = None
    file: str | None = None
    line: int | None = None
    cause: Cause | None = None  # why, where kdbg.causes could tell
    # skb->mark and the conntrack state at the drop (None: not known, e.g. a record
    # made before kdbg read them, or a kernel without conntrack for ct_state):
    # new | established | related (ct_reply: the reply direction), untracked, or
    # invalid (no conntrack entry), as nftables' 'ct state' names them.
    mark: int | None = None
    ct_state: str | None = None
    ct_reply: bool | None = None
    ct_zone: int | None = None  # the conntrack entry's zone id and mark
    ct_mark: int | None = None
    ct_status: int | None = None  # the entry's status bits (enum ip_conntrack_status)
    ct_original: CtTuple | None = None  # the entry's original-direction tuple
    ct_reply_tuple: CtTuple | None = None  # and its reply-direction tuple
    journey: Journey | None = None  # its hops before the drop (kdbg watch --journey)
    prog: BpfProg | None = None  # the BPF program whose verdict dropped it (watch --bpf)
    arp_op: int | None = None  # an ARP packet's operation (family "arp": 1 request, 2 reply)

    @property
    def location(self) -> str:
        """``symbol+0xoff`` (with ``[module]``), or the raw address when unknown."""
        return str(Location(self.address, self.symbol, self.offset, self.module))

    def mark_ct(self) -> dict[str, Any]:
        """The mark and conntrack facts the drop carries, as its JSON record names them
        (the original tuple as an object of its own; absent facts left out): the one
        list the record and the pcapng's kdbg fields (kdbg.record.pcapng) are made from."""
        rec: dict[str, Any] = {}
        if self.mark is not None:
            rec["mark"] = self.mark
        if self.ct_state is not None:
            rec["ct_state"] = self.ct_state
            if self.ct_reply is not None:
                rec["ct_reply"] = self.ct_reply
        if self.ct_zone is not None:
            rec["ct_zone"] = self.ct_zone
            rec["ct_mark"] = self.ct_mark
        if self.ct_status is not None:
            rec["ct_status"] = self.ct_status
        if self.ct_original is not None:
            rec["ct_original"] = self.ct_original.to_json()
        if self.ct_reply_tuple is not None:
            rec["ct_reply_tuple"] = self.ct_reply_tuple.to_json()
        return rec

    def to_json(self) -> dict[str, Any]:
        """The documented ``{"type": "drop", ...}`` record (docs/watch.md)."""
        rec: dict[str, Any] = {
            "type": "drop",
            "time_ns": self.time_ns,
            "cpu": self.cpu,
            "pid": self.pid,
            "tid": self.tid,
            "comm": self.comm,
            "reason": self.reason,
            "reason_code": self.reason_code,
            "location": self.location,
            "address": f"0x{self.address:x}",
            "symbol": self.symbol,
            "offset": self.offset,
            "module": self.module,
            "skb": f"0x{self.skb:x}",
            "proto": self.proto,
            "family": self.family,
            "saddr": str(self.saddr) if self.saddr is not None else None,
            "daddr": str(self.daddr) if self.daddr is not None else None,
            "sport": self.sport,
            "dport": self.dport,
            "netns": self.netns,
            "ifname": self.ifname,
            "ifindex": self.ifindex,
            "len": self.len,
        }
        if self.icmp_type is not None:
            rec["icmp_type"] = self.icmp_type
            rec["icmp_code"] = self.icmp_code
        if self.arp_op is not None:
            rec["arp_op"] = arp_op_name(self.arp_op)
        if self.file is not None:
            rec["file"] = self.file
            rec["line"] = self.line
        rec.update(self.mark_ct())
        if self.cause is not None:
            rec["cause"] = self.cause.to_json()
        if self.prog is not None:
            rec["prog"] = self.prog.to_json()
        if self.journey is not None:
            rec.update(self.journey.to_json())
        if self.stack is not None:
            rec["stack"] = [
                {"address": f"0x{f.address:x}", "symbol": f.symbol, "offset": f.offset,
                 "module": f.module, "frame": str(f)}
                for f in self.stack
            ]
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> DropEvent:
        """Rebuild an event from its JSON record (events piped from another machine)."""
        def addr(v: str | None) -> IPAddress | None:
            return ipaddress.ip_address(v) if v else None

        stack = None
        if rec.get("stack") is not None:
            stack = tuple(
                Frame(int(f["address"], 16), f.get("symbol"), f.get("offset", 0), f.get("module"))
                for f in rec["stack"]
            )
        return cls(
            time_ns=rec["time_ns"], cpu=rec["cpu"], pid=rec["pid"], tid=rec.get("tid", 0),
            comm=rec["comm"], reason=rec["reason"], reason_code=rec["reason_code"],
            address=int(rec["address"], 16), symbol=rec.get("symbol"),
            offset=rec.get("offset", 0), module=rec.get("module"),
            skb=int(rec.get("skb", "0x0"), 16), proto=rec.get("proto"),
            family=rec.get("family"), saddr=addr(rec.get("saddr")), daddr=addr(rec.get("daddr")),
            sport=rec.get("sport"), dport=rec.get("dport"), icmp_type=rec.get("icmp_type"),
            icmp_code=rec.get("icmp_code"), netns=rec.get("netns"), ifname=rec.get("ifname"),
            ifindex=rec.get("ifindex"), len=rec.get("len", 0), stack=stack,
            file=rec.get("file"), line=rec.get("line"),
            cause=Cause.from_json(rec["cause"]) if rec.get("cause") is not None else None,
            mark=rec.get("mark"), ct_state=rec.get("ct_state"), ct_reply=rec.get("ct_reply"),
            ct_zone=rec.get("ct_zone"), ct_mark=rec.get("ct_mark"),
            ct_status=rec.get("ct_status"),
            ct_original=(CtTuple.from_json(rec["ct_original"]) if rec.get("ct_original")
                         else None),
            ct_reply_tuple=(CtTuple.from_json(rec["ct_reply_tuple"])
                            if rec.get("ct_reply_tuple") else None),
            journey=Journey.from_json(rec),
            prog=BpfProg.from_json(rec["prog"]) if rec.get("prog") is not None else None,
            arp_op=arp_op_number(rec["arp_op"]) if rec.get("arp_op") is not None else None,
        )


def from_drop(addrs: Sequence[int], location: int) -> Sequence[int]:
    """A stack captured by the drop program, from the function that dropped on: the
    frames before it are the tracing's own (the program, ``bpf_trace_run*``). The
    location is that function's return address, so the frame before it is the drop
    function's."""
    try:
        at = list(addrs).index(location)
    except ValueError:
        return addrs
    return addrs[at - 1:] if at > 0 else addrs


class Decoder:
    """Turns raw ring-buffer records into :class:`DropEvent`."""

    def __init__(
        self,
        reasons: ReasonTable,
        kallsyms: Kallsyms,
        *,
        stack_of: Callable[[int], Sequence[int]] | None = None,
        wall_offset_ns: int | None = None,
    ) -> None:
        self.reasons = reasons
        self.kallsyms = kallsyms
        self.stack_of = stack_of
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC; report wall-clock time. One offset for
        # all of a watch's times (``wall_offset_ns``): two reads of it seconds apart can
        # differ by microseconds (the wall clock is slewed), more than a hop is from its
        # drop.
        self.wall_offset_ns = (time.time_ns() - time.monotonic_ns() if wall_offset_ns is None
                               else wall_offset_ns)

    def frame(self, address: int) -> Frame:
        loc = self.kallsyms.lookup(address)
        return Frame(address, loc.symbol, loc.offset, loc.module)

    def decode(self, raw: RawDropEvent) -> DropEvent:
        loc = self.kallsyms.lookup(raw.location)
        family = FAMILY_NAMES.get(raw.family)
        saddr, daddr = addresses(raw.family, raw.saddr, raw.daddr)
        proto = None
        if family == "arp":
            proto = "arp"
        elif raw.family:
            proto = PROTO_NAMES.get(raw.l4proto, str(raw.l4proto))
        is_icmp = raw.l4proto in (1, 58)
        has_ports = bool(raw.l4_valid) and not is_icmp
        stack = None
        if self.stack_of is not None and raw.stack_id >= 0:
            stack = tuple(self.frame(a)
                          for a in from_drop(self.stack_of(raw.stack_id), raw.location))
        return DropEvent(
            time_ns=raw.time_ns + self.wall_offset_ns,
            cpu=raw.cpu,
            pid=raw.tgid,
            tid=raw.tid,
            comm=raw.comm.decode(errors="replace"),
            reason=self.reasons.name(raw.reason),
            reason_code=raw.reason,
            address=raw.location,
            symbol=loc.symbol,
            offset=loc.offset,
            module=loc.module,
            skb=raw.skbaddr,
            proto=proto,
            family=family,
            saddr=saddr,
            daddr=daddr,
            sport=raw.sport if has_ports else None,
            dport=raw.dport if has_ports else None,
            icmp_type=raw.icmp_type if is_icmp and raw.l4_valid else None,
            icmp_code=raw.icmp_code if is_icmp and raw.l4_valid else None,
            netns=raw.netns or None,
            ifname=raw.ifname.decode(errors="replace") or None,
            ifindex=raw.ifindex or None,
            len=raw.len,
            stack=stack,
            # a record of layout 'kdbg_drop_record 1' has neither
            mark=getattr(raw, "mark", None),
            **ct_fields(raw),
            arp_op=raw.sport if family == "arp" else None,  # the program puts ar_op there
        )
