"""From a drop location (a return address) to the call instruction that dropped the skb.

The ``skb:kfree_skb`` tracepoint reports ``location`` as the return address of the call
into the drop function, i.e. the instruction *after* the call. Breaking there would stop
after the skb is freed; breaking at the call itself stops with the skb alive and its
arguments in registers. x86 instructions have no fixed length, so the call is found by
disassembling forward from a known instruction boundary (the function's start, or a
short window that decodes into step with it) up to the return address.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from kdbg.debugger.errors import NotADropSite
from kdbg.debugger.mi import as_int
from kdbg.debugger.model import Instruction

# Functions whose call is a drop, i.e. that fire skb:kfree_skb with the caller's address.
# kfree_skb() became an inline wrapper around kfree_skb_reason() in Linux kernel commit
# c504e5c2f964 ("net: skb: introduce kfree_skb_reason()") (in v5.17); the tracepoint
# moved into sk_skb_reason_drop() with Linux kernel commit ba8de796baf4 ("net: introduce
# sk_skb_reason_drop function") (in v6.11).
DROP_FUNCTIONS = (
    "kfree_skb_reason",
    "sk_skb_reason_drop",
    "kfree_skb",
    "kfree_skb_list_reason",
    "kfree_skb_list",
    "__kfree_skb_reason",
)

# The function the tracepoint fires in, newest kernels first: a target has one of them out
# of line (on 6.11+ kfree_skb_reason() is an inline wrapper, so it is not in kallsyms).
PRIMARY = ("sk_skb_reason_drop", "kfree_skb_reason", "kfree_skb")


def _lookup(names: Iterable[str]) -> Collection[str]:
    return names if isinstance(names, Collection) else set(names)


def drop_function(names: Iterable[str]) -> str | None:
    """The target's out-of-line drop function, from its own symbol names (kallsyms):
    ``sk_skb_reason_drop`` on 6.11+, ``kfree_skb_reason`` from 5.17, else ``kfree_skb``."""
    have = _lookup(names)
    return next((n for n in PRIMARY if n in have), None)


def drop_functions(names: Iterable[str]) -> tuple[str, ...]:
    """The drop functions (:data:`DROP_FUNCTIONS`) the target has, its main one first."""
    have = _lookup(names)
    main = drop_function(have)
    rest = tuple(n for n in DROP_FUNCTIONS if n in have and n != main)
    return ((main,) if main else ()) + rest


_CALL = re.compile(r"^\s*(?:call|callq)\s+(?P<target>\*?\S+)(?:\s+<(?P<sym>[^>+]+)(?:\+\d+)?>)?")


def instructions(asm_insns: Iterable[Mapping[str, Any]]) -> list[Instruction]:
    """Instructions from ``-data-disassemble ... -- 2`` (raw opcodes give the lengths)."""
    out = []
    for ins in asm_insns:
        addr = as_int(ins.get("address"))
        opcodes = str(ins.get("opcodes", "")).split()
        if addr is None or not opcodes:
            continue
        out.append(Instruction(addr, len(opcodes), str(ins.get("inst", "")).strip()))
    return out


def call_target(text: str) -> tuple[int | None, str | None]:
    """For a call instruction's text: (direct target address or None, gdb's symbol or None).

    Raises ValueError when ``text`` is not a call at all.
    """
    m = _CALL.match(text)
    if m is None:
        raise ValueError(f"not a call: {text!r}")
    target = m["target"]
    if target.startswith("*"):
        return None, m["sym"]
    return as_int(target), m["sym"]


CALL_REL32 = 0xE8  # call rel32: the opcode, then the target's offset from the next instruction
CALL_REL32_LEN = 5


def direct_call(code: bytes, return_address: int) -> Instruction | None:
    """The direct call ``call rel32`` whose 5 bytes ``code`` are, the last ones before
    ``return_address``; None when they are not one. Its text names only the target
    address (``call   0x...``), which the caller checks is a drop function: five bytes
    ending at a return address, opening with 0xe8 and pointing exactly at a drop
    function's entry, are that call (the return address came from a call to it)."""
    if len(code) != CALL_REL32_LEN or code[0] != CALL_REL32:
        return None
    rel = int.from_bytes(code[1:], "little", signed=True)
    target = (return_address + rel) & 0xFFFF_FFFF_FFFF_FFFF
    return Instruction(return_address - CALL_REL32_LEN, CALL_REL32_LEN, f"call   0x{target:x}")


def call_before(insns: list[Instruction], return_address: int) -> Instruction | None:
    """The instruction that ends exactly at ``return_address`` if it is a call, else None."""
    for ins in reversed(insns):
        if ins.end == return_address:
            try:
                call_target(ins.text)
            except ValueError:
                return None
            return ins
        if ins.end < return_address:
            return None
    return None


def check_callee(callee: str | None, location: str, ins: Instruction,
                 target: Iterable[str] | None = None) -> str:
    """Return ``callee`` when it is a drop function; NotADropSite naming it otherwise.

    With ``target`` (the target's symbol names), only the drop functions it has count.
    """
    known = drop_functions(target) if target is not None else DROP_FUNCTIONS
    known = known or DROP_FUNCTIONS
    if callee is None:
        raise NotADropSite(
            f"{location}: the call before it ({ins.text}) is indirect; "
            "kdbg cannot prove it calls a drop function",
            hint="break at the location itself (kdbg gdb break ADDR)",
        )
    if callee not in known:
        raise NotADropSite(
            f"{location}: the call before it goes to {callee}, not a drop function "
            f"({', '.join(known[:3])}{', ...' if len(known) > 3 else ''})",
            hint="a tail call may have hidden the real caller; break at the location itself",
        )
    return callee
