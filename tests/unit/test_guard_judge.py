"""The guard as a session's collaborator fails closed: whatever stops it from judging
a breakpoint refuses that breakpoint, with the reason (rule ``cannot-judge``)."""

from __future__ import annotations

import inspect

import pytest

from kdbg.guard import Guard
from kdbg.guard.decision import BreakpointRefused
from kdbg.guard.judge import CANNOT_JUDGE
from kdbg.symbols.evidence import TargetSymbols
from tests.conftest import DATA

KALLSYMS = (DATA / "guard" / "kallsyms.sample").read_text()


def _addr(symbols: TargetSymbols, name: str) -> int:
    return symbols.kallsyms.symbol(name).address


def test_a_guard_without_symbols_refuses_and_says_why() -> None:
    guard = Guard(None, missing="the debugger was given no kallsyms of the target")
    decision = guard.judge(0xFFFFFFFF81000000, transport="gdbstub")
    assert decision.verdict == "refuse" and decision.refused
    assert decision.rule == CANNOT_JUDGE
    assert "no kallsyms" in decision.why and "no kallsyms" in decision.evidence.fact
    with pytest.raises(BreakpointRefused, match="cannot judge") as err:
        guard.enforce(decision)
    assert err.value.decision is decision and err.value.exit_code == 3


def test_symbols_that_cannot_be_read_refuse() -> None:
    def broken() -> TargetSymbols:
        raise OSError("lab gone")

    decision = Guard(broken).judge(0xFFFFFFFF81000000, transport="kgdboe")
    assert decision.refused and decision.rule == CANNOT_JUDGE
    assert "OSError: lab gone" in decision.why


def test_a_failing_check_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    symbols = TargetSymbols.from_parts(KALLSYMS)
    addr = _addr(symbols, "do_sys_openat2")
    guard = Guard(symbols)
    assert guard.judge(addr, transport="kgdboe").verdict == "allow"  # it can judge

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyError("btf type")

    monkeypatch.setattr("kdbg.guard.judge.check", boom)
    decision = guard.judge(addr, transport="kgdboe")
    assert decision.refused and "the guard failed: KeyError" in decision.why


def test_an_unknown_transport_refuses() -> None:
    symbols = TargetSymbols.from_parts(KALLSYMS)
    decision = Guard(symbols).judge(_addr(symbols, "do_sys_openat2"), transport="carrier-pigeon")
    assert decision.refused and decision.rule == CANNOT_JUDGE


def test_force_overrides_but_is_recorded() -> None:
    decision = Guard(None).judge(0x1234, transport="gdbstub", force=True)
    assert decision.verdict == "refuse" and decision.forced and not decision.refused
    Guard(None).enforce(decision)  # forced: no exception
    assert decision.to_json()["forced"] is True


def test_symbols_are_built_once_on_first_use() -> None:
    calls = []

    def build() -> TargetSymbols:
        calls.append(1)
        return TargetSymbols.from_parts(KALLSYMS)

    guard = Guard(build)
    assert calls == []
    symbols = guard.symbols
    assert symbols is not None
    guard.judge(_addr(symbols, "do_sys_openat2"), transport="gdbstub")
    guard.judge(_addr(symbols, "tcp_v4_rcv"), transport="gdbstub")
    assert calls == [1]


def test_the_session_holds_a_typed_guard_not_an_import() -> None:
    """Session and its run control take the guard as a required argument; check_guard
    has no import."""
    from kdbg.debugger.runcontrol import RunControl
    from kdbg.debugger.session import Session

    for cls in (Session, RunControl):
        params = inspect.signature(cls.__init__).parameters
        assert params["guard"].annotation == "Guard"
        assert params["guard"].default is inspect.Parameter.empty
    assert "import" not in inspect.getsource(RunControl.check_guard)


def test_the_sessions_default_guard_fails_closed_without_kallsyms() -> None:
    from kdbg.debugger.connection import default_guard
    from kdbg.debugger.endpoint import Endpoint

    guard = default_guard(None, None, None, 0, Endpoint.parse("tcp:127.0.0.1:1234"))
    decision = guard.judge(0xFFFFFFFF81000000, transport="gdbstub")
    assert decision.refused and "no kallsyms" in decision.why
