"""Breakpoints a dead debug session left in kgdb.

kgdb keeps the breakpoints gdb asked for in its own table, ``kgdb_break[]``, and takes
them out when gdb detaches. A gdb that died without detaching (see
:mod:`kdbg.debugger.breakin`) leaves them there: the next stop would be in a place
nobody asked for. Right after attaching over kgdboc or KGDBoE, before setting any
breakpoint of its own, kdbg reads that table through gdb (the vmlinux's DWARF gives
its layout), removes every breakpoint still set with gdb's ``z0`` packet, reads the
table again and reports what it removed. QEMU's gdb stub keeps breakpoints outside the
guest and drops them when its gdb goes, so it needs none of this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kdbg.debugger.mi import as_int
from kdbg.debugger.session import Session
from kdbg.errors import KdbgError


@dataclass(frozen=True)
class KgdbTable:
    """Where ``kgdb_break[]`` is and how its entries are laid out (from DWARF)."""

    base: int
    count: int
    size: int
    addr_offset: int
    state_offset: int
    live_states: frozenset[int]  # BP_SET and BP_ACTIVE

    def parse(self, raw: bytes) -> list[int]:
        """Addresses of the entries whose state is live, in table order."""
        found = []
        for i in range(min(self.count, len(raw) // self.size)):
            entry = raw[i * self.size:(i + 1) * self.size]
            addr = int.from_bytes(entry[self.addr_offset:self.addr_offset + 8], "little")
            state = int.from_bytes(entry[self.state_offset:self.state_offset + 4], "little")
            if state in self.live_states and addr:
                found.append(addr)
        return found


def _value(session: Session, expr: str, timeout: float) -> int:
    value = as_int(session.inspect.evaluate(expr, timeout).split()[0])
    if value is None:
        raise KdbgError(f"gdb could not evaluate {expr}")
    return value


def kgdb_table(session: Session, timeout: float = 10.0) -> KgdbTable:
    """The layout of the target's ``kgdb_break[]`` (needs the vmlinux's DWARF)."""
    entry = "((struct kgdb_bkpt *)0)"
    return KgdbTable(
        base=_value(session, "(unsigned long)&kgdb_break", timeout),
        count=_value(session, "sizeof(kgdb_break)/sizeof(kgdb_break[0])", timeout),
        size=_value(session, "sizeof(kgdb_break[0])", timeout),
        addr_offset=_value(session, f"(unsigned long)&{entry}->bpt_addr", timeout),
        state_offset=_value(session, f"(unsigned long)&{entry}->state", timeout),
        live_states=frozenset((_value(session, "(int)BP_SET", timeout),
                               _value(session, "(int)BP_ACTIVE", timeout))),
    )


def kgdb_breakpoints(session: Session, table: KgdbTable, timeout: float = 10.0) -> list[int]:
    """Addresses of the breakpoints kgdb holds now."""
    return table.parse(session.inspect.read_memory(table.base, table.count * table.size,
                                                   timeout))


def remove(session: Session, addresses: Iterable[int], timeout: float = 10.0) -> None:
    """Ask kgdb to take each breakpoint out (gdb's ``z0`` packet)."""
    for addr in addresses:
        session.gdb.console(f"maint packet z0,{addr:x},1", timeout)


def clear(session: Session, timeout: float = 10.0) -> tuple[list[str], list[str]]:
    """On a kgdb target with DWARF, right after attach: remove the breakpoints a dead
    session left. Returns (removed, still there), each named ``symbol+0xoff``."""
    if not session.state.endpoint.transport.kgdb or not session.state.has_dwarf:
        return [], []
    table = kgdb_table(session, timeout)
    before = kgdb_breakpoints(session, table, timeout)
    if not before:
        return [], []
    remove(session, before, timeout)
    after = set(kgdb_breakpoints(session, table, timeout))

    def name(addr: int) -> str:
        sym, off, mod = session.inspect.symbolize(addr)
        text = f"{sym}+0x{off:x}" if sym else f"0x{addr:x} [?]"
        return f"{text} [{mod}]" if sym and mod else text

    return ([name(a) for a in before if a not in after], [name(a) for a in sorted(after)])
