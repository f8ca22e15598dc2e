"""``kdbg-state FILE``: what kdbg knew when it handed over the prompt (loaded by
kdbg_prompt.py). The file's schema is :mod:`kdbg.prompt.state`'s docstring.

It sets ``$kdbg_skb`` to the stopped skb: ``(struct sk_buff *)ADDR`` when gdb knows the
type, else the integer. ``kdbg-skb``, ``kdbg-rule``, ``kdbg-where`` and kdbg's
``lx-symbols`` read the state through :func:`current`.
"""

from __future__ import annotations

from typing import Any

import gdb  # type: ignore[import-not-found]
from kdbg.errors import KdbgError
from kdbg.prompt.state import PromptState, read

# (file, state): the last one loaded; kept when kdbg_prompt.py is sourced again (a
# reload runs this module again in the same namespace)
_loaded: list[tuple[str, PromptState]] = globals().get("_loaded", [])


def current() -> PromptState | None:
    """The state last loaded, or None."""
    return _loaded[-1][1] if _loaded else None


def require(command: str) -> PromptState:
    """The state, or a one-line gdb error naming ``command``."""
    state = current()
    if state is None:
        raise gdb.GdbError(f"{command}: no kdbg state loaded (kdbg-state FILE; kdbg loads it "
                           "when it hands over the prompt)")
    return state


def record_option(arg: str, usage: str) -> tuple[str | None, str]:
    """``--record FILE`` at the start of a command's argument: (FILE or None, the rest);
    a one-line gdb error with ``usage`` when FILE is missing."""
    if not arg.strip().startswith("--record"):
        return None, arg.strip()
    _, record, rest = (arg.strip().split(None, 2) + ["", ""])[:3]
    if not record:
        raise gdb.GdbError(f"usage: {usage}")
    return record, rest.strip()


def sk_buff_pointer() -> Any:
    """gdb's ``struct sk_buff *``; gdb.error when gdb has no such type."""
    return gdb.lookup_type("struct sk_buff").pointer()


def as_skb(address: int) -> Any:
    """``(struct sk_buff *)address``, or the integer when gdb does not know the type."""
    try:
        return gdb.Value(address).cast(sk_buff_pointer())
    except gdb.error:
        return gdb.Value(address)


def summary(path: str, state: PromptState) -> str:
    """The line ``kdbg-state`` prints."""
    parts = [f"kdbg: state from {path}"]
    if state.stop is not None:
        parts.append(f"stopped at {state.stop.name}")
        if state.stop.skb is not None:
            parts.append(f"skb 0x{state.stop.skb:x} in $kdbg_skb")
    parts.append(f"{len(state.breakpoints)} breakpoint(s)")
    if state.module_roots:
        parts.append(f"{len(state.module_roots)} module root(s)")
    return "; ".join(parts)


class _StateCommand(gdb.Command):  # type: ignore[misc]
    """kdbg-state FILE: load the state kdbg wrote for this prompt.

The stop, the drop that armed the breakpoint, kdbg's breakpoints with the guard's
decisions, the trees of module debug files; sets $kdbg_skb. Without FILE: what is loaded.
"""

    def __init__(self) -> None:
        super().__init__("kdbg-state", gdb.COMMAND_SUPPORT, gdb.COMPLETE_FILENAME)

    def invoke(self, arg: str, from_tty: bool) -> None:
        argv = gdb.string_to_argv(arg)
        if len(argv) != 1:
            if not argv and _loaded:
                gdb.write(summary(*_loaded[-1]) + "\n")
                return
            raise gdb.GdbError("usage: kdbg-state FILE")
        try:
            state = read(argv[0])
        except KdbgError as err:
            raise gdb.GdbError(f"kdbg-state: {err}") from err
        _loaded[:] = [(argv[0], state)]
        if state.stop is not None and state.stop.skb is not None:
            gdb.set_convenience_variable("kdbg_skb", as_skb(state.stop.skb))
        gdb.write(summary(argv[0], state) + "\n")


_StateCommand()
