"""Tracepoint record layouts, read from tracefs ``events/<sys>/<name>/format`` files."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from kdbg.errors import ProbeUnavailable

TRACEFS = Path("/sys/kernel/tracing")

_FIELD = re.compile(
    r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d)"
)
_SYMBOLIC = re.compile(r"\{\s*(-?\d+|0x[0-9a-fA-F]+)\s*,\s*\"([^\"]*)\"\s*\}")


@dataclass(frozen=True)
class TpField:
    """One field of a tracepoint record."""

    name: str
    ctype: str
    offset: int
    size: int
    signed: bool


@dataclass(frozen=True)
class TpFormat:
    """A tracepoint's record: its fields and its print format."""

    system: str
    name: str
    id: int
    fields: dict[str, TpField]
    print_fmt: str

    def field(self, name: str) -> TpField:
        try:
            return self.fields[name]
        except KeyError:
            raise ProbeUnavailable(
                f"tracepoint {self.system}:{self.name} has no field {name!r}"
            ) from None

    def symbolic(self, field: str) -> dict[int, str]:
        """The ``__print_symbolic(REC->field, {v, "NAME"}, ...)`` table, if the format has one."""
        start = self.print_fmt.find(f"__print_symbolic(REC->{field},")
        if start < 0:
            return {}
        depth, end = 0, start
        for end in range(start, len(self.print_fmt)):
            ch = self.print_fmt[end]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    break
        table = self.print_fmt[start:end]
        return {int(v, 0): name for v, name in _SYMBOLIC.findall(table)}


def parse(text: str, system: str = "?", name: str = "?") -> TpFormat:
    """Parse the text of a tracefs ``format`` file."""
    fields: dict[str, TpField] = {}
    tp_id = -1
    print_fmt = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            tp_id = int(line.split(":", 1)[1])
        elif line.startswith("print fmt:"):
            print_fmt = line.split(":", 1)[1].strip()
        else:
            m = _FIELD.search(line)
            if m:
                decl = m["decl"].strip()
                fname = re.split(r"[\s*]+", decl.split("[")[0])[-1]
                ctype = decl[: decl.rfind(fname)].strip()
                fields[fname] = TpField(fname, ctype, int(m["off"]), int(m["size"]),
                                        m["signed"] == "1")
    return TpFormat(system, name, tp_id, fields, print_fmt)


def ensure_tracefs() -> Path:
    """The tracefs mount point, or ProbeUnavailable with the fix."""
    for root in (TRACEFS, Path("/sys/kernel/debug/tracing")):
        try:
            if (root / "events").is_dir():
                return root
        except PermissionError:
            raise ProbeUnavailable(f"cannot read {root}", hint="run as root") from None
    try:
        os.listdir(TRACEFS)
    except PermissionError:
        raise ProbeUnavailable(f"cannot read {TRACEFS}", hint="run as root") from None
    except OSError:
        pass
    raise ProbeUnavailable(
        "tracefs is not mounted", hint="mount -t tracefs nodev /sys/kernel/tracing"
    )


def load(system: str, name: str) -> TpFormat:
    """The running kernel's format for tracepoint ``system:name``."""
    root = ensure_tracefs()
    path = root / "events" / system / name / "format"
    try:
        return parse(path.read_text(), system, name)
    except FileNotFoundError:
        raise ProbeUnavailable(f"this kernel has no tracepoint {system}:{name}") from None
    except PermissionError:
        raise ProbeUnavailable(f"cannot read {path}", hint="run as root") from None
