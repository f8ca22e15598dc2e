"""NETFILTER_DROP's cause: the nftables rule (or chain policy) that dropped the packet.

Only this cause needs the drop's kernel stack: its frames name the hook
(``ip_local_deliver`` is INPUT, ``ip_forward`` FORWARD, …), and the namespace's
ruleset is evaluated there (:mod:`kdbg.causes.nftrules`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kdbg.causes import nftrules
from kdbg.causes.netnsref import NetnsRef
from kdbg.causes.reads import Drop, NetnsReads, not_established
from kdbg.errors import KdbgError
from kdbg.trace.cause import Cause

# The function that runs a netfilter hook, per hook (IPv4 and IPv6). The first
# of these below nf_hook_slow in the drop's stack names the hook.
HOOK_FRAMES: dict[str, str] = {
    "ip_rcv": "prerouting", "ip_list_rcv": "prerouting", "ip_sublist_rcv": "prerouting",
    "ip_rcv_core": "prerouting",
    "ip_local_deliver": "input",
    "ip_forward": "forward",
    "__ip_local_out": "output", "ip_local_out": "output", "raw_send_hdrinc": "output",
    "ip_output": "postrouting", "ip_mc_output": "postrouting",
    "ipv6_rcv": "prerouting", "ipv6_list_rcv": "prerouting", "ip6_sublist_rcv": "prerouting",
    "ip6_input": "input",
    "ip6_forward": "forward",
    "__ip6_local_out": "output", "ip6_local_out": "output", "ip6_xmit": "output",
    "rawv6_send_hdrinc": "output", "ndisc_send_skb": "output", "mld_sendpack": "output",
    "igmp6_send": "output",
    "ip6_output": "postrouting", "ip6_finish_output2": "postrouting",
    "nf_hook_ingress": "ingress", "__netif_receive_skb_core": "ingress",
    "nf_hook_egress": "egress", "__dev_queue_xmit": "egress",
}
# nft_do_chain's callers name the table family (when the call is not a tail call).
CHAIN_FAMILY_FRAMES = {
    "nft_do_chain_ipv4": ("ip",), "nft_do_chain_ipv6": ("ip6",),
    "nft_do_chain_inet": ("inet",), "nft_do_chain_inet_ingress": ("inet",),
    "nft_do_chain_netdev": ("netdev",), "nft_do_chain_bridge": ("bridge",),
    "nft_do_chain_arp": ("arp",),
}
LEGACY = {"ipt_do_table": "iptables-legacy", "ip6t_do_table": "ip6tables-legacy",
          "arpt_do_table": "arptables-legacy", "ebt_do_table": "ebtables"}
L4_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmp6": 58}


def function(symbol: str | None) -> str | None:
    """The function a symbol is a copy of: gcc names its specialised copies
    ``__netif_receive_skb_core.constprop.0``, ``ip_rcv_core.isra.0``, ``….part.0``."""
    return symbol.split(".", 1)[0] if symbol else symbol


def hook_of(symbols: Sequence[str | None]) -> tuple[str | None, tuple[str, ...] | None]:
    """The netfilter hook and, when the stack shows it, the table family, from a drop's
    stack (innermost first)."""
    family = None
    for sym in map(function, symbols):
        if sym in CHAIN_FAMILY_FRAMES and family is None:
            family = CHAIN_FAMILY_FRAMES[sym]
        if sym in HOOK_FRAMES:
            return HOOK_FRAMES[sym], family
    return None, family


def hook_depth(symbols: Sequence[str | None]) -> int | None:
    """How many frames, innermost first, decide :func:`hook_of`: up to the first that runs
    a hook (the table family's frames lie before it); None when no frame runs one, so
    every frame counts."""
    for i, sym in enumerate(map(function, symbols)):
        if sym in HOOK_FRAMES:
            return i + 1
    return None


def stack_hook(symbols: Sequence[str | None]) -> str | None:
    """What of the stack decides the cause: the hook (part of the cause key)."""
    return hook_of(symbols)[0]


def where(drop: Drop) -> tuple[str | None, tuple[str, ...], tuple[str, ...], str | None]:
    """The hook the stack names (None: unknown), the hooks and table families to
    evaluate, and why every hook is evaluated (None when one is known)."""
    ev = drop.event
    hook, families = hook_of(drop.stack) if drop.stack is not None else (None, None)
    fams: tuple[str, ...] = nftrules.FAMILIES[ev.family or ""]
    note = None
    if hook is None:
        hooks: tuple[str, ...] = nftrules.HOOKS
        why = ("the drop's stack was not captured" if drop.stack is None
               else "the drop's stack names no netfilter hook")
        note = f"{why}: every hook was evaluated"
    elif hook in ("ingress", "egress"):
        hooks, fams = (hook,), ("netdev", "inet")
    else:
        hooks = (hook,)
    if families is not None:
        fams = tuple(f for f in fams if f in families) or families
    return hook, hooks, fams, note


def find(reads: NetnsReads, drop: Drop, cause: Cause) -> Cause:
    """The rule or policy that dropped the packet, evaluated at the hook its stack names."""
    ev, ns = drop.event, drop.ns
    cause = replace(cause, established=False)
    if ev.symbol in LEGACY:
        return replace(cause, summary=f"cause not established: dropped by a legacy table "
                       f"({ev.symbol}, {LEGACY[ev.symbol]}); kdbg names nftables rules only")
    if ns is None:
        return replace(cause, summary="cause not established: the drop carries no network "
                       "namespace")
    if ev.family not in nftrules.FAMILIES:
        return replace(cause, summary="cause not established: the packet's IP header was "
                       "not parsed")
    hook, hooks, fams, note = where(drop)
    cause = replace(cause, hook=hook, note=note)
    iif = ev.ifname if hook in ("prerouting", "input", "forward", "ingress") else None
    oif = ev.ifname if hook in ("postrouting", "egress") else None
    l4 = L4_NUMBERS.get(ev.proto or "")
    if l4 is None and ev.proto and ev.proto.isdigit():
        l4 = int(ev.proto)
    pkt = nftrules.Packet(ev.family, l4, ev.saddr, ev.daddr, ev.sport, ev.dport,
                          ev.icmp_type, ev.icmp_code, iif, oif)
    try:
        rs = ruleset(reads, ns)
    except KdbgError as err:
        return not_established(cause, err)
    # A rule's drop and a policy's both end in nft_do_chain on 6.18: the location
    # cannot tell them apart, the evaluation does.
    finding = nftrules.find_rule(rs, pkt, hooks, fams)
    if finding.rule is not None and finding.fingerprint:
        reads.fingerprints[(ev.netns, finding.rule.ident)] = finding.fingerprint
    return replace(cause, established=finding.established, rule=finding.rule,
                   candidates=finding.candidates, not_evaluated=finding.unknown,
                   summary=finding.text)


def ruleset(reads: NetnsReads, ns: NetnsRef) -> nftrules.Ruleset:
    """``ns``'s ruleset: the one kept from its current nf_tables generation when no
    transaction came since (and no set of it changes without one), else read afresh;
    where the generation cannot be told, read as every namespace read is (kept
    ``ttl`` s)."""
    gen = reads.generations.of(ns)
    kept = reads.rulesets.get(ns.inode)
    if gen is not None and kept is not None and kept[0] == gen and not kept[1].volatile:
        return kept[1]
    if gen is None or (kept is not None and kept[1].volatile):
        rs: nftrules.Ruleset = reads.read("nft", ns, lambda: nftrules.read(ns))
        return rs
    rs = nftrules.read(ns)  # after the generation: a change meanwhile reads again later
    reads.rulesets[ns.inode] = (gen, rs)
    return rs


def recheck(reads: NetnsReads, cause: Cause) -> str | None:
    """Read the namespace's ruleset again: a note when the rule ``cause`` names was
    changed or deleted since the drop (its text in ``cause`` is the one that decided)."""
    rule = cause.rule
    if rule is None or not cause.netns:
        return None
    try:
        ns = reads.netns.get(cause.netns)
        rs = nftrules.read(ns)
    except KdbgError as err:
        return f"cannot check the ruleset again: {err}"
    if rule.policy is not None:
        chain = rs.chains.get((rule.family, rule.table, rule.chain))
        if chain is None:
            return "the ruleset changed after the drop: the chain was deleted"
        if chain.policy != "drop":
            return ("the ruleset changed after the drop: the chain's policy is now "
                    f"{chain.policy}")
        return None
    now = rs.rule((rule.family, rule.table, rule.chain, rule.handle or 0))
    if now is None:
        return "the ruleset changed after the drop: this rule was deleted since"
    before = reads.fingerprints.get((cause.netns, rule.ident))
    if before is not None and now.fingerprint() != before:
        return "the ruleset changed after the drop: this rule was replaced since"
    return None
