"""Gather what the target's own symbols say about one code address.

Each :class:`Finding` puts the address in a policy category on one kind of
evidence. Where the code *is* comes from the strongest source at hand: DWARF
(the function's own source file), else the module's path, else name rules that
stand in for a path. The kprobe blocklist, kallsyms sections, BTF prototypes and
function-specific name rules are always consulted on top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdbg.errors import BtfError
from kdbg.guard.decision import EVIDENCE_KINDS, Evidence
from kdbg.guard.rules import (
    BLOCKLIST,
    BPF_KINDS,
    BTF_TYPES,
    MODULE_NAME_RULES,
    NAME_RULES,
    PATH_RULES,
    SECTION_CATEGORIES,
    SRC_BPF,
)
from kdbg.symbols.bpfjit import BPF_MODULE
from kdbg.symbols.evidence import TargetSymbols
from kdbg.symbols.kallsyms import Location

_STRUCT = re.compile(r"\b(?:struct|union) (\w+)")


@dataclass(frozen=True)
class Finding:
    """Evidence that puts the address in ``category`` (None: a fact that matched no rule)."""

    evidence: Evidence
    category: str | None

    @property
    def strength(self) -> int:
        return EVIDENCE_KINDS.index(self.evidence.kind)


def base_name(symbol: str) -> str:
    """``tcp_v4_rcv.cold`` / ``foo.constprop.0`` → the C function name."""
    return symbol.split(".", 1)[0]


def gather(loc: Location, symbols: TargetSymbols) -> list[Finding]:
    """Every finding for ``loc``, strongest evidence first."""
    assert loc.symbol is not None
    name = base_name(loc.symbol)
    found: list[Finding] = []
    placed = False

    dwarf = symbols.dwarf() if loc.module is None else None
    if dwarf is not None:
        src = dwarf.line(loc.address)
        if src is not None:
            frame = src.function_frame
            fact = f"{frame} ({frame.function})"
            found += _paths(frame.file, "dwarf", fact)
            placed = True

    jit = symbols.kallsyms.jited_at(loc.address) if loc.module == BPF_MODULE else None
    if jit is not None:
        found.append(Finding(Evidence("module", f"[{BPF_MODULE}] {jit.name}: the JITed code of "
                                                f"{jit.kind} program {jit.prog_id} ({SRC_BPF})"),
                             BPF_KINDS.get(jit.kind)))
        placed = True
    elif loc.module is not None:
        path = symbols.modules.get(loc.module)
        for rule in MODULE_NAME_RULES:
            if rule.matches(loc.module):
                found.append(Finding(Evidence("module", f"[{loc.module}]: module name rule "
                                                       f"{rule.matched(loc.module)!r}"),
                                     rule.category))
                placed = True
        if path is not None:
            found += _paths(path, "module", f"[{loc.module}] {path}")
            placed = True
        else:
            for rule in NAME_RULES:
                hit = rule.matched(loc.module) if not rule.specific else None
                if hit:
                    found.append(Finding(Evidence("name", f"module [{loc.module}]: name rule "
                                                          f"{hit!r} ({rule.category})"),
                                         rule.category))

    if symbols.blocklist is not None:
        blocked = symbols.blocklist.find(loc.address)
        if blocked is not None:
            found.append(Finding(Evidence("blocklist", f"kprobes/blacklist {blocked}"),
                                 BLOCKLIST))

    for section, (lo, hi) in symbols.sections().items():
        if lo <= loc.address < hi and section in SECTION_CATEGORIES:
            found.append(Finding(Evidence("section", f"{section} text 0x{lo:x}-0x{hi:x} "
                                                     "(kallsyms markers)"),
                                 SECTION_CATEGORIES[section]))

    if symbols.btf is not None and loc.module is None:
        try:
            params = symbols.btf.func_params(name)
        except BtfError:
            params = []
        for p in params:
            for struct in _STRUCT.findall(p.type_name):
                if struct in BTF_TYPES:
                    sep = "" if p.type_name.endswith("*") else " "
                    found.append(Finding(Evidence("btf", f"{name}({p.type_name}{sep}{p.name})"),
                                         BTF_TYPES[struct]))

    for rule in NAME_RULES:
        named = rule.matched(name) if rule.specific or not placed else None
        if named:
            found.append(Finding(Evidence("name", f"{name}: name rule {named!r} ({rule.category})"),
                                 rule.category))

    if not found:
        found.append(Finding(Evidence("name", f"{name} matches no rule"), None))
    found.sort(key=lambda f: f.strength)
    return found


def _paths(path: str, kind: str, fact: str) -> list[Finding]:
    hits = [Finding(Evidence(kind, fact), r.category) for r in PATH_RULES if r.matches(path)]
    return hits or [Finding(Evidence(kind, fact), None)]
