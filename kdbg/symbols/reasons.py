"""Drop-reason names, taken from the running kernel.

The numbers behind ``enum skb_drop_reason`` change between kernels (NO_SOCKET is
2 on 6.1 and 3 on 6.18), so names always come from the kernel being traced:
the ``__print_symbolic`` table of ``skb:kfree_skb``'s format file (the tracer
needs that file anyway, so there is no other source to fall back on). What each
reason means is kdbg's own documentation, not a kernel fact: :mod:`kdbg.causes.notes`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

from kdbg.errors import ProbeUnavailable, UnknownReason
from kdbg.symbols.tpformat import TpFormat

PREFIX = "SKB_DROP_REASON_"


@dataclass(frozen=True)
class Reason:
    """One drop reason of the running kernel: its code there, and its name."""

    code: int
    name: str


class ReasonTable:
    """The kernel's drop reasons: code ↔ name, and lenient name lookup."""

    def __init__(self, table: dict[int, str], source: str) -> None:
        self._by_code = dict(sorted(table.items()))
        self._by_name = {name: code for code, name in self._by_code.items()}
        self.source = source

    @classmethod
    def from_tpformat(cls, fmt: TpFormat) -> ReasonTable:
        """Names as the tracepoint prints them; ProbeUnavailable before Linux 5.17."""
        if "reason" not in fmt.fields:
            raise ProbeUnavailable(
                "skb:kfree_skb has no reason field: this kernel predates drop reasons (5.17)",
                hint="upgrade the kernel; bcc's tcpdrop or dropwatch still show locations",
            )
        table = fmt.symbolic("reason")
        if not table:
            raise ProbeUnavailable("skb:kfree_skb's format has no reason names")
        return cls(table, "tracefs skb:kfree_skb format")

    def __iter__(self) -> Iterator[Reason]:
        return (Reason(c, n) for c, n in self._by_code.items())

    def __len__(self) -> int:
        return len(self._by_code)

    def name(self, code: int) -> str:
        """Name of ``code``; unknown codes (subsystem reasons) print as ``REASON_0x…``."""
        return self._by_code.get(code, f"REASON_0x{code:x}")

    def code(self, name: str) -> int:
        """Code for ``NETFILTER_DROP``, ``netfilter_drop`` or ``SKB_DROP_REASON_NETFILTER_DROP``."""
        key = name.strip().upper()
        if key.startswith(PREFIX):
            key = key[len(PREFIX):]
        if key in self._by_name:
            return self._by_name[key]
        close = difflib.get_close_matches(key, list(self._by_name), n=3, cutoff=0.5)
        hint = ("closest: " + ", ".join(close)) if close else "see 'kdbg reasons'"
        raise UnknownReason(f"unknown drop reason {name!r} on this kernel", hint=hint)
