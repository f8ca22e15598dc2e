"""The state file kdbg writes before it hands over gdb's prompt, and its reader.

gdb's ``kdbg-state FILE`` (``gdb/kdbg_state.py``) reads it; ``kdbg-skb``, ``kdbg-rule``,
``kdbg-where`` and kdbg's ``lx-symbols`` use what it says. One JSON object, UTF-8::

    {
      "version": 1,
      "transport": "gdbstub",                   # the guard's name: gdbstub|kgdboc|kgdboe
      "endpoint": "unix:/root/.cache/kdbg/run/labs/egdb/gdb.sock",
      "stop": {                                 # where the target is stopped, or null
        "address": "0xffffffffc038654a",        # the pc kdbg stopped at
        "label": "nft_do_chain+0x47a",          # that pc as kdbg names it
        "callee": "kfree_skb_reason",           # the drop function called there, or null
        "skb": "0xff11000006b74d00",            # the skb argument of that call, or null
        "reason": "NETFILTER_DROP"              # the reason argument's name, or null
      },
      "armed_by": {...},                        # the drop that armed the breakpoint, as
                                                # ``kdbg watch --json`` prints a drop record
                                                # (its "cause" when it had one), or null
      "breakpoints": [                          # kdbg's breakpoints in this gdb
        {"number": 1, "address": "0xffffffffc038654a", "label": "nft_do_chain+0x47a",
         "decision": {...}}                     # the guard's Decision.to_json(), or null
      ],
      "module_roots": ["/root/.cache/kdbg/kernels/debian-6.1.0-57-amd64/debug/lib/modules"],
                                                # trees of modules' debug .ko files
      "journey_table": {                        # where the tracer in the target keeps its
        "address": "0xffffc90000e41000",        # journeys (kdbg-journey reads the stopped
        "slots": 1024, "slot_size": 1712,       # skb's slot there), as a drop record's
        "wall_offset_ns": 1796480000000000000,  # "journey_table" says; absent when the
        "attached_ns": 5320000000               # tracer ran without its journey
      },
      "netns_names": {"4026532308": "jb-a"}     # namespace names the tracer gave, by inode
    }

Addresses are hex strings. Only ``version`` 1 exists; every key but ``version`` may be
missing or null (``kdbg gdb attach`` has no stop and no drop). The reader needs none of
kdbg's writer: :func:`read` takes the file, :func:`from_json` the object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdbg.errors import BadInput
from kdbg.trace.event import DropEvent
from kdbg.trace.journey import JourneyTable

VERSION = 1


@dataclass(frozen=True)
class StopPoint:
    """Where kdbg stopped the target: the pc, and the drop call there."""

    address: int
    label: str | None = None
    callee: str | None = None
    skb: int | None = None
    reason: str | None = None

    @property
    def name(self) -> str:
        """``label (0xADDR)``, or the address alone."""
        return f"{self.label} (0x{self.address:x})" if self.label else f"0x{self.address:x}"


@dataclass(frozen=True)
class GuardVerdict:
    """What the guard decided for a breakpoint (of its Decision's JSON)."""

    verdict: str
    rule: str
    why: str
    transport: str | None = None
    forced: bool = False


@dataclass(frozen=True)
class KdbgBreakpoint:
    """One of kdbg's breakpoints, and the guard's decision for it."""

    number: int
    address: int
    label: str | None = None
    decision: GuardVerdict | None = None


@dataclass(frozen=True)
class PromptState:
    """What kdbg knew when it handed over the prompt."""

    transport: str | None = None
    endpoint: str | None = None
    stop: StopPoint | None = None
    armed_by: DropEvent | None = None
    breakpoints: tuple[KdbgBreakpoint, ...] = ()
    module_roots: tuple[Path, ...] = ()
    journey_table: JourneyTable | None = None
    netns_names: Mapping[int, str] = field(default_factory=dict)

    def netns_name(self, inode: int | None) -> str | None:
        """The name the tracer gave namespace ``inode``, if any."""
        return self.netns_names.get(inode) if inode is not None else None


def read(path: str | Path) -> PromptState:
    """The state in ``path``; :class:`BadInput` in one line when it cannot be read."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror or err}") from err
    except ValueError as err:
        raise BadInput(f"{path} is not JSON: {err}") from err
    try:
        return from_json(rec)
    except BadInput as err:
        raise BadInput(f"{path}: {err}") from err


def from_json(rec: Any) -> PromptState:
    """The state of a decoded state file (see the module's docstring)."""
    if not isinstance(rec, Mapping):
        raise BadInput("not a kdbg state (a JSON object)")
    version = rec.get("version", VERSION)
    if version != VERSION:
        raise BadInput(f"state version {version!r}: this kdbg reads version {VERSION}")
    armed_by = None
    if rec.get("armed_by") is not None:
        try:
            armed_by = DropEvent.from_json(dict(rec["armed_by"]))
        except (KeyError, TypeError, ValueError) as err:
            raise BadInput(f'"armed_by" is not a drop record ({type(err).__name__}: '
                           f"{err})") from err
    return PromptState(
        transport=_opt(rec, "transport", str),
        endpoint=_opt(rec, "endpoint", str),
        stop=_stop(rec["stop"]) if rec.get("stop") is not None else None,
        armed_by=armed_by,
        breakpoints=tuple(_breakpoint(b) for b in _opt(rec, "breakpoints", list) or ()),
        module_roots=tuple(Path(p) for p in _opt(rec, "module_roots", list) or ()),
        journey_table=_journey_table(rec.get("journey_table")),
        netns_names=_netns_names(_opt(rec, "netns_names", Mapping) or {}),
    )


def _opt(rec: Mapping[str, Any], key: str, kind: type) -> Any:
    value = rec.get(key)
    if value is not None and not isinstance(value, kind):
        raise BadInput(f'"{key}" is not a {kind.__name__}: {value!r}')
    return value


def _address(rec: Mapping[str, Any], key: str, where: str) -> int | None:
    value = rec.get(key)
    if value is None:
        return None
    try:
        return int(value, 16) if isinstance(value, str) else int(value)
    except (TypeError, ValueError) as err:
        raise BadInput(f'"{where}.{key}" is not an address: {value!r}') from err


def _stop(rec: Any) -> StopPoint:
    if not isinstance(rec, Mapping):
        raise BadInput('"stop" is not an object')
    address = _address(rec, "address", "stop")
    if address is None:
        raise BadInput('"stop" has no "address"')
    return StopPoint(address, _opt(rec, "label", str), _opt(rec, "callee", str),
                     _address(rec, "skb", "stop"), _opt(rec, "reason", str))


def _breakpoint(rec: Any) -> KdbgBreakpoint:
    if not isinstance(rec, Mapping) or not isinstance(rec.get("number"), int):
        raise BadInput(f'a "breakpoints" entry without a number: {rec!r}')
    address = _address(rec, "address", "breakpoints")
    decision = rec.get("decision")
    verdict = None
    if isinstance(decision, Mapping):
        verdict = GuardVerdict(str(decision.get("verdict", "?")), str(decision.get("rule", "?")),
                               str(decision.get("why", "")), decision.get("transport"),
                               bool(decision.get("forced", False)))
    return KdbgBreakpoint(rec["number"], address or 0, _opt(rec, "label", str), verdict)


def _journey_table(rec: Any) -> JourneyTable | None:
    if rec is None:
        return None
    try:
        return JourneyTable.from_json(rec)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise BadInput(f'"journey_table" is not a journey table ({type(err).__name__}: '
                       f"{err})") from err


def _netns_names(rec: Mapping[str, Any]) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in rec.items()}
    except ValueError as err:
        raise BadInput(f'"netns_names" is not names by inode: {err}') from err
