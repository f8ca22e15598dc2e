"""gdb-side helper for a kdbg session's interactive prompt.

``kdbg-done`` hands the session back to kdbg, which deletes every breakpoint, resumes
the target and detaches. kdbg watches the console for the marker this prints.
``kdbg_session.gdb`` makes ``quit`` do the same (a quit hook that errors stops gdb
from quitting, so kdbg can clean up through its own channel).
"""

from __future__ import annotations

import gdb  # type: ignore[import-not-found]

MARKER = "@@kdbg-done@@"


class _Done(gdb.Command):  # type: ignore[misc]
    """kdbg-done: return to kdbg (breakpoints deleted, target resumed, gdb detached)."""

    def __init__(self) -> None:
        super().__init__("kdbg-done", gdb.COMMAND_SUPPORT)

    def invoke(self, arg: str, from_tty: bool) -> None:
        gdb.write("kdbg: returning to kdbg, which cleans up the target\n")
        gdb.write(MARKER + "\n")
        gdb.flush()
        if arg.strip() == "--from-quit":
            raise gdb.GdbError("kdbg: quit handled by kdbg")


_Done()
