"""RunControl.drop_site: a direct call to a drop function is read as 5 bytes, anything
else is left to gdb's disassembly."""

from __future__ import annotations

from typing import Any

import pytest

from kdbg.debugger.errors import NotADropSite
from kdbg.debugger.model import Instruction
from kdbg.debugger.runcontrol import RunControl
from kdbg.errors import GdbError
from kdbg.symbols.kallsyms import Kallsyms

RET = 0xFFFFFFFFC038A54F  # nft_do_chain+0x44f on the 6.1 lab: the call's return address
DROP_FN = 0xFFFFFFFF817C02A0
TEXT = """\
ffffffff817c02a0 T kfree_skb_reason
ffffffff817c0400 T consume_skb
ffffffffc038a110 t nft_do_chain\t[nf_tables]
ffffffffc038b000 t nft_other\t[nf_tables]
"""


class FakeInspect:
    def __init__(self, state: Any, code: bytes | None) -> None:
        self.state, self.code = state, code
        self.disassembled: list[int] = []

    def read_memory(self, addr: int, length: int, timeout: float = 10.0) -> bytes:
        if self.code is None:
            raise GdbError("Cannot access memory")
        assert (addr, length) == (RET - 5, 5)
        return self.code

    def symbolize(self, addr: int) -> tuple[str | None, int, str | None]:
        loc = self.state.kallsyms.lookup(addr)
        return loc.symbol, loc.offset, loc.module

    def call_before(self, ret: int, timeout: float = 10.0) -> Instruction | None:
        self.disassembled.append(ret)
        return Instruction(ret - 5, 5, f"call   0x{DROP_FN:x} <kfree_skb_reason>")


class State:
    running = False

    def __init__(self, tmp: Any) -> None:
        path = tmp / "kallsyms"
        path.write_text(TEXT)
        self.kallsyms = Kallsyms.load(path)


def control(tmp: Any, code: bytes | None) -> tuple[RunControl, FakeInspect]:
    state = State(tmp)
    inspect = FakeInspect(state, code)
    return RunControl(None, state, None, inspect), inspect  # type: ignore[arg-type]


def rel32(target: int) -> bytes:
    return b"\xe8" + ((target - RET) & 0xFFFFFFFF).to_bytes(4, "little")


def test_a_direct_call_to_a_drop_function_needs_no_disassembly(tmp_path: Any) -> None:
    rc, inspect = control(tmp_path, rel32(DROP_FN))
    site = rc.drop_site(RET)
    assert inspect.disassembled == []
    assert (site.call_addr, site.call_len, site.callee) == (RET - 5, 5, "kfree_skb_reason")
    assert site.instruction == f"call   0x{DROP_FN:x} <kfree_skb_reason>"
    assert site.caller.startswith("nft_do_chain+0x")


@pytest.mark.parametrize("code", [
    rel32(0xFFFFFFFF817C0400),  # a call, but to consume_skb
    rel32(DROP_FN + 4),  # not a function's entry
    bytes.fromhex("90ffd09090"),  # no call rel32
    None,  # the bytes could not be read
])
def test_anything_else_is_left_to_gdb(tmp_path: Any, code: bytes | None) -> None:
    rc, inspect = control(tmp_path, code)
    site = rc.drop_site(RET)
    assert inspect.disassembled == [RET]
    assert site.callee == "kfree_skb_reason"


def test_gdb_still_refuses_a_call_to_something_else(tmp_path: Any) -> None:
    rc, inspect = control(tmp_path, rel32(0xFFFFFFFF817C0400))
    inspect.call_before = lambda ret, timeout=10.0: Instruction(  # type: ignore[method-assign]
        ret - 5, 5, "call   0xffffffff817c0400 <consume_skb>")
    with pytest.raises(NotADropSite, match="consume_skb"):
        rc.drop_site(RET)
