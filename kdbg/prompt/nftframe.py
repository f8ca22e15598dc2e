"""What gdb's ``kdbg-rule`` prints: the nftables rule read from ``nft_do_chain``'s own
frame, beside the cause kdbg had worked out from the ruleset.

gdb reads the locals ``rule`` (``struct nft_rule_dp *``: its ``handle``) and ``chain``
(``->name``, ``->table->name``, ``->table->family``) into a :class:`FrameRule`; the
text is made here.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdbg.trace.cause import Cause, RuleRef

# table->family is an NFPROTO_* number (include/uapi/linux/netfilter.h); nft names it so.
NFT_FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}

# The frame that evaluates nftables rules, and what an iptables-legacy kernel evaluates
# its rules in instead (with the local that holds the rule).
NFT_FRAME = "nft_do_chain"
LEGACY_FRAMES = {"ipt_do_table": "ipt_entry", "ip6t_do_table": "ip6t_entry",
                 "arpt_do_table": "arpt_entry"}


@dataclass(frozen=True)
class FrameRule:
    """The rule ``nft_do_chain`` was evaluating, as its frame holds it."""

    family: int
    table: str
    chain: str
    handle: int | None  # None: past the chain's last rule, the base chain's policy decided
    level: int  # gdb's frame number
    source: str = "its locals rule and chain"  # what of the frame gave rule and chain
    exprs: tuple[str, ...] = ()  # the rule's expressions' type names, if read

    @property
    def ref(self) -> RuleRef:
        """The rule as kdbg's causes name rules."""
        return RuleRef(NFT_FAMILIES.get(self.family, f"family{self.family}"), self.table,
                       self.chain, self.handle, policy="drop" if self.handle is None else None)


def describe(rule: FrameRule, cause: Cause | None) -> list[str]:
    """The lines ``kdbg-rule`` prints: the kernel's rule, kdbg's cause, whether they agree."""
    lines = [f"kernel: {rule.ref.place}   (nft_do_chain, frame #{rule.level}: "
             f"{rule.source})"]
    if rule.exprs:
        lines.append(f"        expressions: {' '.join(rule.exprs)}")
    if cause is None:
        lines.append("kdbg:   no cause (kdbg's state has no drop that armed this breakpoint, "
                     "or it had no cause)")
        return lines
    ours = cause.rule
    if ours is not None:
        lines.append(f"kdbg:   {ours.label}   (the cause kdbg printed, worked out from the "
                     "ruleset)")
        lines.append("same rule" if ours.ident == rule.ref.ident else
                     "they differ: kdbg's cause is for the drop that armed the breakpoint, "
                     "evaluated from the ruleset; the kernel's frame is this stop's packet")
        return lines
    if cause.candidates:
        lines.append("kdbg:   no single rule; its candidates were:")
        lines += [f"          {c.label}" for c in cause.candidates]
        lines.append(f"the kernel's frame settles it: {rule.ref.place}"
                     if any(c.ident == rule.ref.ident for c in cause.candidates) else
                     "they differ: the kernel's rule is none of kdbg's candidates")
        return lines
    lines.append(f"kdbg:   named no rule: {cause.text or cause.reason}")
    return lines


def not_in_nft(frames: list[str], hook: str | None = None) -> str:
    """Why ``kdbg-rule`` has no rule, for a stack of function names (innermost first) and,
    at a drop in nf_hook_slow, the hook function that returned NF_DROP to it."""
    for level, name in enumerate(frames):
        if name in LEGACY_FRAMES:
            return (f"kdbg-rule: the stop is in {name} (frame #{level}: iptables-legacy, not "
                    f"nftables); its rule is that frame's local e (struct "
                    f"{LEGACY_FRAMES[name]} *)")
    if "nf_hook_slow" not in frames:
        return ("kdbg-rule: no nft_do_chain frame in the stack: this stop is not in an "
                "nftables rule")
    if hook is None:
        return ("kdbg-rule: no nft_do_chain frame in the stack: nf_hook_slow dropped the "
                "packet after a hook function returned NF_DROP")
    legacy = LEGACY_FRAMES.get(hook)
    if legacy is not None:
        return (f"kdbg-rule: iptables-legacy: {hook} returned NF_DROP to nf_hook_slow and its "
                f"rule went with its frame; break in {hook} to read it (its local e, struct "
                f"{legacy} *)")
    if hook.startswith(NFT_FRAME):
        return (f"kdbg-rule: no rule decided: {hook} returned NF_DROP to nf_hook_slow, which "
                "is an nftables base chain's policy (a rule's drop frees the packet inside "
                "nft_do_chain)")
    return (f"kdbg-rule: no nft_do_chain frame in the stack: nf_hook_slow dropped the packet "
            f"after the hook function {hook} returned NF_DROP")
