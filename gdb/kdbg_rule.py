"""``kdbg-rule`` and ``kdbg-where`` (loaded by kdbg_prompt.py).

``kdbg-rule`` reads the nftables rule being evaluated from the kernel's own
``nft_do_chain`` frame (its locals ``rule`` and ``chain``) and prints it beside the cause
kdbg had worked out from the ruleset (:mod:`kdbg.prompt.nftframe`). ``kdbg-where`` prints
the drop that armed this breakpoint and kdbg's breakpoints with the guard's decisions,
from kdbg's state (:mod:`kdbg.prompt.where`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import kdbg_state  # type: ignore[import-not-found]

import gdb  # type: ignore[import-not-found]
from kdbg.prompt import nftframe, where

MAX_FRAMES = 64
MAX_EXPRS = 32


def _frames() -> list[Any]:
    frames = []
    frame = gdb.newest_frame()
    while frame is not None and len(frames) < MAX_FRAMES:
        frames.append(frame)
        try:
            frame = frame.older()
        except gdb.error:
            break
    return frames


def _exprs(rule: Any) -> tuple[str, ...]:
    """The type names of the rule's expressions (nft_rule_for_each_expr), or () when
    they cannot be read."""
    try:
        expr_t = gdb.lookup_type("struct nft_expr").pointer()
        base, dlen = int(rule["data"].address), int(rule["dlen"])
        names: list[str] = []
        offset = 0
        while offset < dlen and len(names) < MAX_EXPRS:
            ops = gdb.Value(base + offset).cast(expr_t)["ops"]
            names.append(ops["type"]["name"].string())
            size = int(ops["size"])
            if size <= 0:
                break
            offset += size
        return tuple(names)
    except (gdb.error, gdb.MemoryError):
        return ()


def _holds(chain: Any, rule: int) -> bool:
    """Whether ``rule`` lies in one of ``chain``'s two rule blobs (nft_rule_blob)."""
    for gen in ("blob_gen_0", "blob_gen_1"):
        blob = chain[gen]
        if int(blob):
            start = int(blob["data"].address)
            # the blob's size leaves out its trailer, the is_last rule after the last one
            if start <= rule <= start + int(blob["size"]):
                return True
    return False


def _frame_chain(frame: Any, name: str) -> Any:
    """A ``struct nft_chain *`` the frame holds (a local, an argument, the last jump's
    target), or None when it is optimized out or NULL."""
    value = frame.read_var("regs")["verdict"]["chain"] if name == "regs.verdict.chain" \
        else frame.read_var(name)
    if value.is_optimized_out or not int(value):
        return None
    return value.cast(gdb.lookup_type("struct nft_chain").pointer())


def _chain(frame: Any, rule: int, policy: bool) -> tuple[Any, str]:
    """The chain ``rule`` is in, and how it was found: nft_do_chain's local ``chain``;
    where that is optimized out (6.12), the chain among those the frame still holds
    (``basechain``, the ``priv`` argument, the last jump's ``regs.verdict.chain``) whose
    rule blob holds ``rule``. Past a chain's last rule (``policy``) it is the base chain,
    whose policy applies."""
    if policy:
        for name in ("basechain", "priv"):
            with contextlib.suppress(ValueError, gdb.error):
                chain = _frame_chain(frame, name)
                if chain is not None:
                    return chain, (f"rule is past its chain's last rule: the policy of the "
                                   f"base chain ({name}) decided")
    else:
        chain = frame.read_var("chain")
        if not chain.is_optimized_out:
            return chain, "its locals rule and chain"
        for name in ("basechain", "priv", "regs.verdict.chain"):
            with contextlib.suppress(ValueError, gdb.error, gdb.MemoryError):
                chain = _frame_chain(frame, name)
                if chain is not None and _holds(chain, rule):
                    return chain, (f"its local rule; chain optimized out, {name}'s rule blob "
                                   "holds rule")
    raise gdb.GdbError(f"kdbg-rule: nft_do_chain's chain is optimized out at this pc (frame "
                       f"#{frame.level()}) and no chain the frame holds has rule 0x{rule:x} "
                       "in its rule blob")


def _dropping_hook(frames: list[Any], names: list[str]) -> str | None:
    """At a drop in nf_hook_slow: the hook function that returned NF_DROP to it (its
    ``e->hooks[s].hook``), by name; else None."""
    if "nf_hook_slow" not in names:
        return None
    frame = frames[names.index("nf_hook_slow")]
    try:
        entry = frame.read_var("e")["hooks"][int(frame.read_var("s"))]
        block = gdb.current_progspace().block_for_pc(int(entry["hook"]))
        while block is not None and block.function is None:
            block = block.superblock
        return block.function.name if block is not None else None
    except (ValueError, RuntimeError, gdb.error, gdb.MemoryError):
        return None


def frame_rule() -> nftframe.FrameRule:
    """The rule in the innermost ``nft_do_chain`` frame; a one-line gdb error if none."""
    try:
        frames = _frames()
    except gdb.error as err:
        raise gdb.GdbError(f"kdbg-rule: {err}") from err
    names = [f.name() or "" for f in frames]
    if nftframe.NFT_FRAME not in names:
        unnamed = names.count("")
        hint = (f" ({unnamed} frame(s) gdb cannot name: a module without its debug file? "
                "lx-symbols loads them)") if unnamed else ""
        raise gdb.GdbError(nftframe.not_in_nft(names, _dropping_hook(frames, names)) + hint)
    frame = frames[names.index(nftframe.NFT_FRAME)]
    level = frame.level()
    try:
        rule = frame.read_var("rule")
        if rule.is_optimized_out:
            raise gdb.GdbError(f"kdbg-rule: nft_do_chain's local rule is optimized out at "
                               f"this pc (frame #{level})")
        policy = bool(int(rule["is_last"]))
        chain, source = _chain(frame, int(rule), policy)
        table = chain["table"]
        return nftframe.FrameRule(int(table["family"]), table["name"].string(),
                                  chain["name"].string(), None if policy else int(rule["handle"]),
                                  level, source, () if policy else _exprs(rule))
    except (ValueError, gdb.error, gdb.MemoryError) as err:
        raise gdb.GdbError(f"kdbg-rule: cannot read the rule from nft_do_chain (frame "
                           f"#{level}): {err}") from err


class _RuleCommand(gdb.Command):  # type: ignore[misc]
    """kdbg-rule: the nftables rule being evaluated, from nft_do_chain's frame, beside kdbg's cause.

Read from the kernel's own frame (locals rule and chain): table, chain and the handle as
'nft -a list ruleset' prints it; then the rule kdbg printed as the drop's cause.
"""

    def __init__(self) -> None:
        super().__init__("kdbg-rule", gdb.COMMAND_DATA)

    def invoke(self, arg: str, from_tty: bool) -> None:
        if arg.strip():
            raise gdb.GdbError("usage: kdbg-rule")
        rule = frame_rule()
        state = kdbg_state.current()
        cause = state.armed_by.cause if state is not None and state.armed_by else None
        gdb.write("\n".join(nftframe.describe(rule, cause)) + "\n")


class _WhereCommand(gdb.Command):  # type: ignore[misc]
    """kdbg-where: the drop that armed this breakpoint, and kdbg's breakpoints with the guard's decisions."""  # noqa: E501

    def __init__(self) -> None:
        super().__init__("kdbg-where", gdb.COMMAND_STATUS)

    def invoke(self, arg: str, from_tty: bool) -> None:
        if arg.strip():
            raise gdb.GdbError("usage: kdbg-where")
        state = kdbg_state.require("kdbg-where")
        in_gdb = {bp.number for bp in gdb.breakpoints()}
        gdb.write("\n".join(where.describe(state, in_gdb)) + "\n")


_RuleCommand()
_WhereCommand()
