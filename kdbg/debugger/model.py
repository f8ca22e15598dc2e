"""What a debug session reports and loads: breakpoints, stops, frames, drop sites,
modules' debug files. Frozen values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Frame:
    """One backtrace frame: ``address`` is the pc (frame 0) or a return address."""

    level: int
    address: int
    symbol: str | None
    offset: int
    file: str | None = None
    line: int | None = None
    module: str | None = None
    text: str | None = None  # the source line's text, when gdb found the file

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": f"0x{self.address:x}",
            "symbol": self.symbol,
            "offset": self.offset,
        }
        if self.module:
            out["module"] = self.module
        if self.file is not None:
            out["file"] = self.file
        if self.line is not None:
            out["line"] = self.line
        if self.text is not None:
            out["text"] = self.text
        return out

    def __str__(self) -> str:
        where = f"{self.symbol}+0x{self.offset:x}" if self.symbol else "??"
        if self.module:
            where += f" [{self.module}]"
        text = f"#{self.level:<2} 0x{self.address:016x} {where}"
        if self.file:
            text += f" at {self.file}" + (f":{self.line}" if self.line is not None else "")
        return text


@dataclass(frozen=True)
class KernelTree:
    """What gdb is given of the target kernel's own source: the directories its DWARF
    file names resolve in (``directory``), Linux's gdb scripts (the tree's
    ``vmlinux-gdb.py``: lx-dmesg, lx-ps, $lx_current(), ...), and, in one line, what is
    missing and why."""

    dirs: tuple[Path, ...] = ()
    gdb_scripts: Path | None = None
    note: str | None = None

    @classmethod
    def of(cls, tree: Path) -> KernelTree:
        """A kernel tree given by hand (``--source DIR``): its own ``vmlinux-gdb.py``
        when it was built with the gdb scripts."""
        scripts = tree / "vmlinux-gdb.py"
        if scripts.exists():
            return cls((tree,), scripts)
        return cls((tree,), None, f"no vmlinux-gdb.py in {tree}: Linux's gdb helpers need "
                                  "CONFIG_GDB_SCRIPTS=y or make scripts_gdb there")


@dataclass(frozen=True)
class Breakpoint:
    """A breakpoint kdbg set: gdb's number, the address, hardware or not, what it is for."""

    number: int
    address: int
    label: str
    hw: bool = False
    decision: Any = field(default=None, compare=False, repr=False)  # the guard's, if any

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"number": self.number, "address": f"0x{self.address:x}",
                               "label": self.label, "hw": self.hw}
        if self.decision is not None:
            out["decision"] = self.decision.to_json()
        return out


@dataclass(frozen=True)
class Stop:
    """The target stopped: why, where, and the frames kdbg can vouch for.

    ``backtrace`` holds only trusted frames. ``truncated`` says why it ends early when
    it does (for example: no DWARF, so no frame past the caller is trustworthy).
    """

    reason: str
    address: int
    symbol: str | None
    offset: int
    breakpoint: int | None = None
    thread: str | None = None
    backtrace: tuple[Frame, ...] = ()
    truncated: str | None = None
    file: str | None = None
    line: int | None = None
    seen_at: float = field(default=0.0, compare=False)  # monotonic: gdb's report was read

    @property
    def hit(self) -> bool:
        return self.reason == "breakpoint-hit"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "hit" if self.hit else "stop",
            "reason": self.reason,
            "address": f"0x{self.address:x}",
            "symbol": self.symbol,
            "offset": self.offset,
            "breakpoint": self.breakpoint,
            "backtrace": [f.to_json() for f in self.backtrace],
        }
        if self.file is not None:
            out["file"] = self.file
            out["line"] = self.line
        if self.truncated:
            out["truncated"] = self.truncated
        return out


@dataclass(frozen=True)
class Instruction:
    """One disassembled instruction: address, length and gdb's text for it."""

    address: int
    length: int
    text: str

    @property
    def end(self) -> int:
        return self.address + self.length


@dataclass(frozen=True)
class DropSite:
    """The call to a drop function whose return address the tracer reported.

    ``call_addr`` is where to break: at that instruction the skb has not been freed yet.
    ``location`` is the return address (the tracer's ``location``), ``callee`` the drop
    function called and ``caller`` the function holding the call, as ``sym+0xoff``.
    """

    location: int
    call_addr: int
    call_len: int
    callee: str
    caller: str
    instruction: str

    def to_json(self) -> dict[str, Any]:
        return {
            "location": f"0x{self.location:x}",
            "call_addr": f"0x{self.call_addr:x}",
            "callee": self.callee,
            "caller": self.caller,
            "instruction": self.instruction,
        }


@dataclass
class CleanupReport:
    """What :meth:`Session.close` managed to do, and the target's state afterwards."""

    ok: bool = True
    target_state: str = "running, no kdbg breakpoints"
    steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def message(self) -> str:
        if self.ok:
            return f"target {self.target_state}"
        return (
            "could not clean up the debug session: "
            + "; ".join(self.problems)
            + f". The target is {self.target_state}."
        )

