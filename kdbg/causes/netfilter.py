"""NETFILTER_DROP's cause: the nftables rule (or chain policy) that dropped the packet.

Only this cause needs the drop's kernel stack: its frames name the hook
(``ip_local_deliver`` is INPUT, ``ip_forward`` FORWARD, …), and the namespace's
ruleset is evaluated there (:mod:`kdbg.causes.nftrules`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

from kdbg.causes import conntrack, nfhooks, nftrules
from kdbg.causes.netnsref import NetnsRef
from kdbg.causes.reads import Drop, NetnsReads, not_established
from kdbg.errors import KdbgError
from kdbg.trace.cause import Cause, HookFn, HookList
from kdbg.trace.event import DropEvent

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
    # ARP's own (NFPROTO_ARP: net/ipv4/arp.c): arp_rcv runs NF_ARP_IN, arp_xmit
    # NF_ARP_OUT
    "arp_rcv": "input", "arp_xmit": "output",
}
# The bridge's own hooks (NFPROTO_BRIDGE: net.nf.hooks_bridge), by the function that
# runs them (net/bridge/br_input.c, br_forward.c, br_netfilter_hooks.c):
# br_handle_frame runs prerouting's entries itself (nf_hook_bridge_pre, inlined);
# br_netfilter's okfns run the rest of prerouting's and forward's past its own
# (br_nf_hook_thresh); __br_forward runs forward, or output for a frame the bridge
# device sent (:func:`hook_at`).
BRIDGE_HOOK_FRAMES: dict[str, str] = {
    "br_handle_frame": "prerouting", "br_nf_pre_routing_finish": "prerouting",
    "br_nf_pre_routing_finish_ipv6": "prerouting",
    "br_pass_frame_up": "input",
    "__br_forward": "forward", "br_nf_forward_finish": "forward",
    "br_forward_finish": "postrouting",
}
# br_netfilter's bridge hook functions that pass a bridged IPv4/IPv6 packet to that
# family's own hook (bridge-nf-call-iptables/ip6tables): the hook a function runs.
BR_NF_FRAMES: dict[str, str] = {
    "br_nf_pre_routing": "prerouting", "br_nf_pre_routing_ipv6": "prerouting",
    "br_nf_forward_ip": "forward", "br_nf_post_routing": "postrouting",
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


class HookAt(NamedTuple):
    """The netfilter hook a drop's stack names: its name (None: no frame runs one), the
    nftables table families that run there when the stack shows them, how many frames
    decided (None: all), and whose hook it is: ``"bridge"`` for the bridge's own
    (NFPROTO_BRIDGE), ``"br_netfilter"`` for the packet's IPv4/IPv6 hook that
    br_netfilter ran for a bridged packet, None for the packet's family's own."""

    hook: str | None
    tables: tuple[str, ...] | None
    depth: int | None
    via: str | None = None


def _br_forward(syms: list[str | None], i: int) -> tuple[str, int | None]:
    """__br_forward's hook: output when the bridge device sent the frame (br_dev_xmit
    below it), forward when a port received it (br_handle_frame_finish below it)."""
    for j in range(i + 1, len(syms)):
        if syms[j] == "br_dev_xmit":
            return "output", j + 1
        if syms[j] == "br_handle_frame_finish":
            return "forward", j + 1
    return "forward", None


def hook_at(symbols: Sequence[str | None]) -> HookAt:
    """The netfilter hook of a drop, from its stack (innermost first): the first frame
    that runs a hook names it."""
    family = None
    syms = [function(s) for s in symbols]
    for i, sym in enumerate(syms):
        if sym in CHAIN_FAMILY_FRAMES and family is None:
            family = CHAIN_FAMILY_FRAMES[sym]
        if sym in HOOK_FRAMES:
            return HookAt(HOOK_FRAMES[sym], family, i + 1)
        if sym in BR_NF_FRAMES:
            return HookAt(BR_NF_FRAMES[sym], family, i + 1, "br_netfilter")
        if sym in BRIDGE_HOOK_FRAMES:
            hook, depth = (_br_forward(syms, i) if sym == "__br_forward"
                           else (BRIDGE_HOOK_FRAMES[sym], i + 1))
            return HookAt(hook, family, depth, "bridge")
    return HookAt(None, family, None)


def hook_of(symbols: Sequence[str | None]) -> tuple[str | None, tuple[str, ...] | None]:
    """The netfilter hook and, when the stack shows it, the table family, from a drop's
    stack (innermost first)."""
    at = hook_at(symbols)
    return at.hook, at.tables


def hook_depth(symbols: Sequence[str | None]) -> int | None:
    """How many frames, innermost first, decide :func:`hook_of`: up to the first that runs
    a hook (the table family's frames lie before it), or for __br_forward up to the frame
    that tells forward from output; None when no frame decides, so every frame counts."""
    return hook_at(symbols).depth


def stack_hook(symbols: Sequence[str | None]) -> str | None:
    """What of the stack decides the cause: the hook, and whose it is (part of the cause
    key): ``forward``, ``bridge forward``, ``br_netfilter forward``."""
    at = hook_at(symbols)
    return at.hook if at.via is None or at.hook is None else f"{at.via} {at.hook}"


def where(drop: Drop) -> tuple[HookAt, tuple[str, ...], tuple[str, ...], str | None]:
    """The hook the stack names (its ``hook`` None: unknown), the hooks and table
    families to evaluate, and why every hook is evaluated (None when one is known)."""
    ev = drop.event
    at = hook_at(drop.stack) if drop.stack is not None else HookAt(None, None, None)
    hook = at.hook
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
    if at.via == "bridge":
        fams = ("bridge",)
    if at.tables is not None:
        fams = tuple(f for f in fams if f in at.tables) or at.tables
    return at, hooks, fams, note


def devices(at: HookAt, ifname: str | None) -> tuple[str | None, str | None]:
    """The input and output device names a chain at ``at`` matches, as far as the drop's
    device tells them: the one the skb was on at the drop is the input at prerouting,
    input and forward, the output at postrouting and egress; at the bridge's forward and
    output, the port the frame leaves by. Through br_netfilter neither: IPv4/IPv6's
    hooks see the bridge device, not the port."""
    if at.via == "br_netfilter":
        return None, None
    if at.via == "bridge":
        return ((ifname, None) if at.hook in ("prerouting", "input")
                else (None, ifname))
    return (ifname if at.hook in ("prerouting", "input", "forward", "ingress") else None,
            ifname if at.hook in ("postrouting", "egress") else None)


def hook_list(reads: NetnsReads, ns: NetnsRef, family: str | None, hook: str | None,
              rs: nftrules.Ruleset | None) -> tuple[HookList | None, str | None]:
    """The hook functions at the drop's hook (nftables' named after their chains in
    ``rs``), or None and why not."""
    if (hook is None or family not in ("ipv4", "ipv6", "bridge", "arp")
            or hook not in nftrules.HOOKS):
        return None, None
    try:
        found = reads.read(f"nf-hooks {family} {hook}", ns, lambda: nfhooks.hooks_at(
            ns, family, hook, reads.kallsyms() if reads.kallsyms is not None else None))
    except KdbgError as err:
        return None, f"the hook functions were not read: {err}"
    if found is None:
        return None, None
    chains = [(c.family, c.table, c.name, c.hook, c.prio) for c in
              (rs.chains.values() if rs is not None else ()) if c.hook and c.prio is not None]
    return nfhooks.label_chains(found, chains), None


def blame(symbol: str | None, hooks: HookList,
          why_not: Callable[[HookFn], str | None] = lambda f: None
          ) -> tuple[HookFn | None, tuple[HookFn, ...], str]:
    """The hook function that dropped a packet nftables did not: the one whose code the
    drop is in, else the only one there but nftables' chains and those ``why_not`` rules
    out (it says why); else None, with the candidates. And why."""
    fn = function(symbol)
    for f in hooks.functions:
        if f.function == fn:
            return f, (f,), "the drop is in its code"
    others = tuple(f for f in hooks.functions if f.kind != "nftables")
    reasons = {f: why_not(f) for f in others}
    left = tuple(f for f in others if reasons[f] is None)
    if len(left) == 1:
        why = (f"by elimination: the only hook function at the {hooks.hook} hook that can "
               "drop this packet: nftables' chains do not")
        ruled_out = [r for f in others if (r := reasons[f]) is not None]
        if ruled_out:
            why += ", and " + "; ".join(ruled_out)
        return left[0], left, why
    return None, left, ""


# The legacy x_tables tools, by the kind of table a hook function runs.
XT_TOOLS = {"iptables": "iptables-legacy", "ip6tables": "ip6tables-legacy",
            "arptables": "arptables-legacy", "ebtables": "ebtables-legacy"}


# The built-in chain of each hook in an x_tables table.
XT_CHAINS = {"prerouting": "PREROUTING", "input": "INPUT", "forward": "FORWARD",
             "output": "OUTPUT", "postrouting": "POSTROUTING"}
_XT_DROP = re.compile(r" -j (DROP|REJECT)\b")


def xt_drops(save: str, chain: str) -> bool:
    """Whether one table of ``iptables-save`` can drop at built-in ``chain``: its policy
    is DROP, or a rule in it or in any chain of the table's own jumps to DROP or REJECT
    (a match's hotdrop of a malformed packet aside)."""
    for line in save.splitlines():
        if line.startswith(":"):
            name, policy = (line[1:].split() + ["-"])[:2]
            if name == chain and policy == "DROP":
                return True
        elif line.startswith("-A ") and _XT_DROP.search(line):
            name = line.split()[1]
            if name == chain or name not in XT_CHAINS.values():
                return True
    return False


def xt_why_not(reads: NetnsReads, ns: NetnsRef, f: HookFn, hook: str) -> str | None:
    """Why an iptables or ip6tables table's hook function cannot drop at ``hook``, from
    ``iptables-legacy-save`` in ``ns`` (read-only); None for any other function, when it
    can, and when the table cannot be read."""
    tool = XT_TOOLS.get(f.kind or "")
    if f.kind not in ("iptables", "ip6tables") or tool is None or not f.table:
        return None
    table = f.table
    try:
        save = reads.read(f"{tool}-save {table}", ns, lambda: ns.run(
            [f"{tool}-save", "-t", table], what=f"{tool}-save -t {table}"))
    except KdbgError:
        return None
    if xt_drops(save, XT_CHAINS[hook]):
        return None
    return f"{f.kind} {table} has no DROP or REJECT rule for {hook} and accepts by policy"


def why_not(reads: NetnsReads, ns: NetnsRef, hook: str, ev: DropEvent | None
            ) -> Callable[[HookFn], str | None]:
    """Why a hook function at ``hook`` cannot have dropped ``ev``'s packet (None: it may
    have): an x_tables table without a rule that drops there, or one of conntrack's own
    functions the drop's conntrack facts rule out (:mod:`kdbg.causes.conntrack`)."""
    def check(f: HookFn) -> str | None:
        name = function(f.function.split("+", 1)[0]) or ""
        if ev is not None and name in conntrack.FUNCS:
            return conntrack.why_not(name, ev, ns, reads.insert_failed)
        return xt_why_not(reads, ns, f, hook)
    return check


def blamed(reads: NetnsReads, cause: Cause, hooks: HookList, symbol: str | None,
            ns: NetnsRef, ev: DropEvent | None = None) -> Cause:
    """``cause`` for a drop no nftables rule made: blamed on the hook function that
    returned drop, or the candidates named (``ev``: the drop, whose conntrack facts may
    rule out conntrack's own functions)."""
    fn, others, why = blame(symbol, hooks, why_not(reads, ns, hooks.hook, ev))
    where = f"the {hooks.hook} hook ({hooks.family})"
    if fn is not None:
        cause = replace(cause, established=True, dropped_by=fn,
                        summary=f"dropped by the hook function {fn.label} at {where}: {why}")
        tool = XT_TOOLS.get(fn.kind or "")
        if tool is not None:
            return replace(cause, confirm=ns.shell(
                f"{tool} -t {fn.table or 'filter'} -L -v -n --line-numbers"),
                advice=f"change or remove the DROP rule in {tool}'s {fn.table} table "
                "(its packet counters show which matched), or migrate it to nftables")
        return replace(cause, confirm=f"grep -w {fn.function} /proc/kallsyms",
                       advice=f"the hook function {fn.function} "
                       + (f"of module {fn.module} " if fn.module else "(built in) ")
                       + "returned drop: see what registered it at this hook and why")
    if not others:
        return cause
    return replace(cause, established=False, summary=(
        f"cause not established: no nftables rule drops this packet at {where}; one of "
        f"{len(others)} other hook functions there that can drop it returned drop: "
        + "; ".join(f.label for f in others)))


def find(reads: NetnsReads, drop: Drop, cause: Cause) -> Cause:
    """The rule or policy that dropped the packet, evaluated at the hook its stack names;
    the hook functions registered there; the one blamed when no nftables rule drops it."""
    ev, ns = drop.event, drop.ns
    cause = replace(cause, established=False)
    if ns is None:
        return replace(cause, summary="cause not established: the drop carries no network "
                       "namespace")
    if ev.family not in nftrules.FAMILIES:
        return replace(cause, summary="cause not established: the packet's IP header was "
                       "not parsed")
    at, hooks, fams, note = where(drop)
    hook = at.hook
    nf_family = "bridge" if at.via == "bridge" else ev.family
    if at.via == "br_netfilter":
        tool = "ip6tables" if ev.family == "ipv6" else "iptables"
        note = (f"a bridged packet: br_netfilter ran {ev.family}'s {hook} hook for it, "
                f"as net.bridge.bridge-nf-call-{tool} is 1")
    cause = replace(cause, hook=hook, note=note)
    if ev.symbol in LEGACY:
        found, why = hook_list(reads, ns, nf_family, hook, None)
        if found is not None:
            return blamed(reads, replace(cause, hooks=found), found, ev.symbol, ns, ev)
        return replace(cause, summary=f"cause not established: dropped by a legacy table "
                       f"({ev.symbol}, {LEGACY[ev.symbol]}); {why or 'its hook is unknown'}")
    iif, oif = devices(at, ev.ifname)
    l4 = L4_NUMBERS.get(ev.proto or "")
    if l4 is None and ev.proto and ev.proto.isdigit():
        l4 = int(ev.proto)
    pkt = nftrules.Packet(ev.family, l4, ev.saddr, ev.daddr, ev.sport, ev.dport,
                          ev.icmp_type, ev.icmp_code, iif, oif, ev.mark, ev.ct_state,
                          ev.ct_zone, ev.ct_mark, ev.ct_reply, ev.ct_status,
                          ev.ct_original, ev.ct_reply_tuple, ev.arp_op)
    try:
        rs = ruleset(reads, ns)
    except KdbgError as err:
        return not_established(cause, err)
    # A rule's drop and a policy's both end in nft_do_chain on 6.18: the location
    # cannot tell them apart, the evaluation does.
    finding = nftrules.find_rule(rs, pkt, hooks, fams)
    if finding.rule is not None and finding.fingerprint:
        reads.fingerprints[(ev.netns, finding.rule.ident)] = finding.fingerprint
    found, why = (hook_list(reads, ns, nf_family, hook, rs)
                  if finding.none_drops or reads.list_hooks else (None, None))
    cause = replace(cause, established=finding.established, rule=finding.rule,
                    candidates=finding.candidates, not_evaluated=finding.unknown,
                    summary=finding.text, hooks=found)
    if finding.none_drops and found is not None:
        return blamed(reads, cause, found, ev.symbol, ns, ev)
    if why and not finding.established:
        cause = replace(cause, note="; ".join(n for n in (cause.note, why) if n))
    return cause


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
    if cause.dropped_by is not None and cause.netns in reads.insert_failed.used:
        try:
            moved = reads.insert_failed.moved(reads.netns.get(cause.netns))
        except KdbgError:
            moved = None
        if moved is not None:
            return (f"conntrack's insert_failed in this namespace moved during the run "
                    f"({moved[0]} to {moved[1]}): its confirm hook may have dropped some "
                    "of these packets")
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
