"""One description per transport (kdbg/transports.py): every other list of transports
in kdbg is derived from it, and no module but the endpoint parser tests a transport's
name or an endpoint's kind as a string."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest

from kdbg import transports
from kdbg.cli import main
from kdbg.debugger.endpoint import Endpoint
from kdbg.errors import BadInput
from kdbg.guard import TRANSPORTS as GUARD_TRANSPORTS
from kdbg.guard.rules import ALLOW, POLICY, TRANSPORT_HINTS
from kdbg.lab.wiring import WIRINGS
from kdbg.transports import ALL, KINDS, NAMES, Interrupt, Reach, Recovery, Wake

KDBG = Path(__file__).resolve().parents[2] / "kdbg"

# Where an endpoint's kind may still be compared as a string: the endpoint parser (the
# kinds are its syntax).
STRING_TESTS_ALLOWED = ("debugger/endpoint.py",)


def test_names_are_unique_and_in_the_guards_order() -> None:
    assert NAMES == ("gdbstub", "kgdboc", "kgdboe")
    assert [transports.by_name(n) for n in NAMES] == list(ALL)


def test_the_guards_lists_are_the_tables() -> None:
    assert GUARD_TRANSPORTS == NAMES
    for table in (POLICY, ALLOW, TRANSPORT_HINTS):
        assert set(table) == set(NAMES)
    assert {t.name: t.guard_hint for t in ALL} == TRANSPORT_HINTS


def test_the_lab_wires_each_transport_once() -> None:
    assert tuple(WIRINGS) == ALL
    for transport, wired in WIRINGS.items():
        assert wired.transport is transport
        # QEMU serves it on a Unix socket the lab records, or on the lab's own netns
        assert (wired.socket is not None) == (wired.record is not None) != wired.own_netns
        assert (wired.endpoint_kind in transport.kinds) or wired.own_netns
        assert not (wired.qemu_gdb and wired.on_serial)


def test_kgdb_transports_share_kgdbs_rules() -> None:
    """A transport with kgdb in the target refuses kgdb's own code and its blocklist."""
    for t in ALL:
        kgdb_rules = {"kgdb-core", "kprobe-blocklist", "noinstr", "entry-text"}
        rules = {a.rule for a in POLICY[t.name].values()}
        assert (kgdb_rules <= rules) == t.kgdb, t.name
    assert [t.name for t in ALL if t.kgdb] == ["kgdboc", "kgdboe"]
    assert [n for n in NAMES if transports.needs_kgdb(n)] == ["kgdboc", "kgdboe"]


def _transport_choices(group: click.Group, path: str = "kdbg") -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the lazy commands too
        cmd = group.get_command(ctx, name)
        where = f"{path} {name}"
        if isinstance(cmd, click.Group):
            found.update(_transport_choices(cmd, where))
        for param in cmd.params if cmd is not None else ():
            if "--transport" in getattr(param, "opts", ()) and isinstance(param.type,
                                                                           click.Choice):
                found[where] = tuple(param.type.choices)
    return found


def test_every_transport_choice_of_the_cli_is_the_tables() -> None:
    choices = _transport_choices(main)
    assert {"kdbg watch", "kdbg guard check", "kdbg lab up"} <= set(choices)
    for where, names in choices.items():
        assert names == NAMES, where


@pytest.mark.parametrize("text", ["tcp:127.0.0.1:1234", "unix:/s/gdb.sock", "serial:h:4555",
                                  "serial:/s/kgdboc.sock", "/dev/ttyS1", "udp:10.0.0.2:31337"])
def test_every_endpoint_kind_maps_onto_a_transport(text: str) -> None:
    ep = Endpoint.parse(text)
    assert ep.kind in KINDS and ep.transport is KINDS[ep.kind] and ep.transport in ALL
    assert ep.kind in ep.transport.kinds


def test_each_kind_reaches_one_transport() -> None:
    kinds = [k for t in ALL for k in t.kinds]
    assert sorted(kinds) == sorted(set(kinds)) == sorted(KINDS) == ["serial", "tcp", "udp",
                                                                     "unix"]


def test_what_each_transport_does() -> None:
    """The table says what docs/gdb.md says each transport does."""
    stub, oc, oe = transports.GDBSTUB, transports.KGDBOC, transports.KGDBOE
    assert [t.interrupt for t in ALL] == [Interrupt.BREAK_IN, Interrupt.SYSRQ_G,
                                          Interrupt.BREAK_IN]
    assert [t.wake for t in ALL] == [Wake.NOTHING, Wake.SYSRQ_G, Wake.PROBE]
    assert [t.recovery for t in ALL] == [Recovery.NOTHING, Recovery.SYSRQ_G, Recovery.NUDGE]
    assert [t.reach for t in ALL] == [Reach.LISTENING, Reach.SERIAL, Reach.BOUND_UDP]
    assert [t.kinds for t in ALL] == [("tcp", "unix"), ("serial",), ("udp",)]
    assert (stub.relayed, oc.relayed, oe.relayed) == (True, False, False)
    assert (stub.baud, oc.baud, oe.baud) == (False, True, False)
    assert str(oe) == "kgdboe" and f"{stub}" == "gdbstub"
    # stepping: QEMU's single-step flags and only the stopped vCPU run; KGDBoE's steps
    # are judged by the guard (each traps into kgdb, which runs KGDBoE's network path)
    assert "maint packet Qqemu.sstep=0x7" in stub.step_setup
    assert "set scheduler-locking step" in stub.step_setup
    assert [t.guard_steps for t in ALL] == [False, False, True]


def test_an_unknown_name_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown transport 'carrier-pigeon'") as err:
        transports.by_name("carrier-pigeon")
    assert err.value.hint == "one of gdbstub, kgdboc, kgdboe"


def _string_tests(path: Path) -> list[str]:
    """Comparisons with a transport's name, and of an endpoint's ``kind`` with a kind."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        kind = any(isinstance(s, ast.Attribute) and s.attr == "kind" for s in sides)
        words = set(NAMES) | (set(KINDS) if kind else set())
        for side in sides:
            consts = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
            if any(isinstance(c, ast.Constant) and c.value in words for c in consts):
                found.append(f"{path.relative_to(KDBG)}:{node.lineno}")
    return found


def test_no_module_tests_transport_strings() -> None:
    """Outside the endpoint parser, behaviour per transport comes
    from the table, not from ``== "udp"`` or ``in ("kgdboc", "kgdboe")``."""
    found = [hit for path in sorted(KDBG.rglob("*.py"))
             if not str(path.relative_to(KDBG)).startswith(STRING_TESTS_ALLOWED)
             for hit in _string_tests(path)]
    assert not found, "tests of transport strings: " + ", ".join(found)
