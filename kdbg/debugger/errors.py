"""The debugger's own error types, all under :mod:`kdbg.errors`' hierarchy."""

from __future__ import annotations

from kdbg.errors import BadInput, GdbError, KdbgError


class GdbDied(GdbError):
    """The gdb process exited (or was killed) under kdbg."""


class TargetUnreachable(GdbError):
    """gdb could not connect to the endpoint, or the target did not answer."""


class GdbCancelled(GdbError):
    """A gdb command was abandoned because kdbg is stopping (Ctrl-C, SIGTERM)."""


class TargetLost(GdbError):
    """The target went away under an open session (the lab's QEMU died, the link broke)."""


class NotADropSite(BadInput):
    """The instruction before a drop location is not a call to a drop function."""


class SessionInterrupted(KdbgError):
    """SIGTERM arrived during a debug session; raised so the session is cleaned up."""

    exit_code = 143
