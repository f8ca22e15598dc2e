"""Typed errors. The library raises these; only the CLI turns them into messages."""

from __future__ import annotations


class KdbgError(Exception):
    """Base of every error kdbg means to show a user. ``exit_code`` is the CLI's status."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} ({self.hint})" if self.hint else msg


class BadInput(KdbgError):
    """The user asked for something that does not exist or cannot be parsed."""

    exit_code = 2


class NeedsRoot(KdbgError):
    """The command needs root (or capabilities this user lacks); nothing was done."""


class UnknownReason(BadInput):
    """A drop reason the running kernel does not know."""


class UnknownSymbol(BadInput):
    """A symbol that is not in the target's symbol table."""


class ProbeUnavailable(KdbgError):
    """A kernel facility kdbg needs (tracepoint, BTF, BPF, tracefs) is missing."""


class BpfLoadError(KdbgError):
    """bcc could not compile or load the program."""


class BtfError(KdbgError):
    """BTF is missing or does not describe what kdbg needs."""


class GdbError(KdbgError):
    """gdb reported an error, or died."""


class GdbTimeout(GdbError):
    """gdb, or the target behind it, did not answer in time."""


class LabError(KdbgError):
    """The lab VM could not be booted, reached or stopped."""


class LabLost(LabError):
    """The lab's QEMU died or stopped answering."""


class LabTimeout(LabError):
    """A lab operation (boot, a bounded command) did not finish in time."""
