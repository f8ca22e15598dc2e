"""Reading kgdb's breakpoint table (the layout comes from DWARF through gdb; here a
table is built byte by byte in x86-64's layout of struct kgdb_bkpt)."""

from __future__ import annotations

from kdbg.debugger.leftovers import KgdbTable

BP_UNDEFINED, BP_REMOVED, BP_SET, BP_ACTIVE = range(4)


def entry(addr: int, state: int) -> bytes:
    # unsigned long bpt_addr; unsigned char saved_instr[1]; enum type; enum state
    return (addr.to_bytes(8, "little") + b"\xcc" + bytes(3) + (0).to_bytes(4, "little")
            + state.to_bytes(4, "little") + bytes(4))


def test_live_entries_are_the_ones_still_set() -> None:
    table = KgdbTable(base=0xFFFFFFFF82A00000, count=5, size=24, addr_offset=0,
                      state_offset=16, live_states=frozenset((BP_SET, BP_ACTIVE)))
    raw = (entry(0xFFFFFFFF81368C00, BP_ACTIVE) + entry(0xFFFFFFFF81400000, BP_REMOVED)
           + entry(0, BP_UNDEFINED) + entry(0xFFFFFFFF81500010, BP_SET)
           + entry(0xFFFFFFFF81600000, BP_UNDEFINED))
    assert table.parse(raw) == [0xFFFFFFFF81368C00, 0xFFFFFFFF81500010]
    assert table.parse(raw[:24]) == [0xFFFFFFFF81368C00]  # a short read: what is there
    assert table.parse(b"") == []
