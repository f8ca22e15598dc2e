"""Whether the packet stopped at the drop site is one the watch's filters leave out.

A breakpoint is on a code location: every drop there stops the kernel, whatever its
packet (a rule for another port dropping at the same call in ``nft_do_chain``). The
tracer filters in the kernel; a stop is judged here, on what gdb read of the skb, so
that ``--dport 5595 --break`` stops for 5595 only. Only what gdb read and the host can
compare decides: a field gdb could not read, or a filter named on the target (a
namespace by name), never leaves a packet out.
"""

from __future__ import annotations

import ipaddress

from kdbg.debugger.skb import SkbInfo
from kdbg.trace.filters import PacketFilters, parse_network


def left_out(filters: PacketFilters, skb: SkbInfo, reason: str | None) -> str | None:
    """Why the filters leave out the packet stopped with ``skb`` and drop ``reason``
    (``"dport 5555, not --dport 5595"``); None when they keep it, or cannot tell."""
    if filters.reasons and reason is not None and _reason(reason) not in {
            _reason(r) for r in filters.reasons}:
        return f"reason {reason}, not --reason {' '.join(filters.reasons)}"
    if filters.proto is not None and skb.proto is not None and skb.proto != filters.proto:
        return f"{skb.proto}, not --proto {filters.proto}"
    for flag, wanted, have in (("sport", filters.sports, (skb.sport,)),
                               ("dport", filters.dports, (skb.dport,)),
                               ("port", filters.ports, (skb.sport, skb.dport))):
        known = [p for p in have if p is not None]
        if wanted and known and not set(known) & set(wanted):
            return (f"{flag} {'/'.join(map(str, known))}, not "
                    f"--{flag} {' '.join(map(str, wanted))}")
    addr_filters: tuple[tuple[str, tuple[str, ...], tuple[str | None, ...]], ...] = (
        ("saddr", filters.saddrs, (skb.saddr,)), ("daddr", filters.daddrs, (skb.daddr,)),
        ("addr", filters.addrs, (skb.saddr, skb.daddr)))
    for flag, nets, addrs in addr_filters:
        seen = [a for a in addrs if a is not None]
        if nets and seen and not any(_within(a, n) for a in seen for n in nets):
            return f"{flag} {'/'.join(seen)}, not --{flag} {' '.join(nets)}"
    if filters.ifname is not None and skb.ifname is not None and skb.ifname != filters.ifname:
        return f"device {skb.ifname}, not --ifname {filters.ifname}"
    if (filters.netns is not None and filters.netns.isdigit() and skb.netns is not None
            and skb.netns != int(filters.netns)):
        return f"netns {skb.netns}, not --netns {filters.netns}"
    return None


def _reason(name: str) -> str:
    return name.upper().removeprefix("SKB_DROP_REASON_")


def _within(addr: str, net: str) -> bool:
    try:
        return ipaddress.ip_address(addr) in parse_network(net)
    except ValueError:
        return True  # not comparable here: never leave a packet out for it
