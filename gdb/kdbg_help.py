"""``kdbg`` and ``help kdbg``: kdbg's commands at the prompt, and Linux's own helpers
when they are loaded, one line each (loaded last by kdbg_prompt.py, so that the list
has every command sourced before it). The text is :mod:`kdbg.prompt.helplist`'s."""

from __future__ import annotations

import gdb  # type: ignore[import-not-found]
from kdbg.prompt import helplist


def listing() -> str:
    """The list, from gdb's ``help all`` and ``help function`` as they are now."""
    return helplist.listing(helplist.commands(gdb.execute("help all", to_string=True)),
                            helplist.functions(gdb.execute("help function", to_string=True)))


def _invoke(self: gdb.Command, arg: str, from_tty: bool) -> None:
    gdb.write(listing() + "\n")


def install() -> None:
    """(Re)define ``kdbg``, its doc the list as it is now."""
    doc = listing() + "\n\nkdbg: print this list again (with what was loaded since)."
    cls = type("KdbgCommand", (gdb.Command,), {"__doc__": doc, "invoke": _invoke})
    cls("kdbg", gdb.COMMAND_SUPPORT)


install()
