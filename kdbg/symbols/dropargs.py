"""Where the skb and the drop reason are, among the arguments of each drop function:
at a stop on the call to one (or on its first instruction) they are in the argument
registers (x86-64: rdi, rsi, rdx, ...)."""

from __future__ import annotations

ARG_REGISTERS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")

# function -> (index of the skb argument, index of the reason argument or None).
# sk_skb_reason_drop(sk, skb, reason) came with Linux kernel commit ba8de796baf4 ("net:
# introduce sk_skb_reason_drop function") (in v6.11).
DROP_ARGS: dict[str, tuple[int, int | None]] = {
    "kfree_skb_reason": (0, 1),       # (skb, reason)
    "kfree_skb": (0, None),           # (skb)
    "kfree_skb_list_reason": (0, 1),  # (segs, reason)
    "sk_skb_reason_drop": (1, 2),     # (sk, skb, reason)
}


def skb_register(callee: str) -> str | None:
    """The register that holds the skb at a call to ``callee`` (None: not a drop function)."""
    args = DROP_ARGS.get(callee)
    return ARG_REGISTERS[args[0]] if args else None


def reason_register(callee: str) -> str | None:
    """The register that holds the drop reason at a call to ``callee``, if it takes one."""
    args = DROP_ARGS.get(callee)
    return ARG_REGISTERS[args[1]] if args and args[1] is not None else None
