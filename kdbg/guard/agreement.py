"""How far the guard can be trusted without DWARF: verdicts with and without it.

On a stock kernel the guard usually has no debug vmlinux and decides from
kallsyms, BTF and names. Given a vmlinux with DWARF, this module samples its
functions and compares the two verdicts, so the figure is measured, not assumed::

    python -m kdbg.guard.agreement VMLINUX [--transport kgdboe] [--sample 2000] [--seed 11]
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kdbg.guard.policy import check
from kdbg.symbols.evidence import TargetSymbols

_SKIP_PREFIXES = ("__pfx_", "__cfi_", "__SCT__", "__initstub", "__x86_indirect")


@dataclass
class Agreement:
    """Verdict pairs (with DWARF, without DWARF) over a set of functions."""

    transport: str
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    disagreements: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.pairs.values())

    @property
    def agreed(self) -> int:
        return sum(n for (a, b), n in self.pairs.items() if a == b)

    @property
    def ratio(self) -> float:
        return self.agreed / self.total if self.total else 1.0

    def summary(self) -> str:
        """One paragraph: the agreement figure and what the misses were."""
        refused = sum(n for (a, _b), n in self.pairs.items() if a == "refuse")
        caught = self.pairs[("refuse", "refuse")]
        over = sum(n for (a, b), n in self.pairs.items() if b == "refuse" and a != "refuse")
        return (f"{self.transport}: {self.agreed}/{self.total} verdicts agree "
                f"({100 * self.ratio:.1f}%); DWARF refused {refused}, of which kallsyms+BTF+names "
                f"refused {caught}; refused without DWARF but not with it: {over}")


def sample_functions(symbols: TargetSymbols, n: int, seed: int) -> list[str]:
    """``n`` core-kernel text symbols, chosen reproducibly."""
    names = []
    for name in sorted(symbols.kallsyms.names()):
        if name.startswith(_SKIP_PREFIXES):
            continue
        sym = symbols.kallsyms.symbol(name)
        if sym.kind in "tT" and sym.module is None and symbols.kallsyms.size_of(sym) > 1:
            names.append(name)
    return random.Random(seed).sample(names, min(n, len(names)))


def compare(symbols: TargetSymbols, names: Iterable[str], transport: str = "kgdboe"
            ) -> Agreement:
    """Check each name with the target's DWARF and with it set aside."""
    if symbols.dwarf() is None:
        raise ValueError("compare() needs a target with a DWARF vmlinux")
    bare = symbols.without_dwarf()
    out = Agreement(transport)
    for name in names:
        a = check(name, transport=transport, symbols=symbols)
        b = check(name, transport=transport, symbols=bare)
        out.pairs[(a.verdict, b.verdict)] += 1
        if a.verdict != b.verdict:
            out.disagreements.append((name, str(a.evidence), str(b.evidence)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the agreement figure for one vmlinux."""
    ap = argparse.ArgumentParser(prog="python -m kdbg.guard.agreement")
    ap.add_argument("vmlinux")
    ap.add_argument("--transport", default="kgdboe")
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--list", action="store_true", help="print each disagreement")
    args = ap.parse_args(argv)
    symbols = TargetSymbols.from_vmlinux(args.vmlinux)
    try:
        result = compare(symbols, sample_functions(symbols, args.sample, args.seed),
                         args.transport)
    finally:
        symbols.close()
    print(result.summary())
    if args.list:
        for name, with_dwarf, without in result.disagreements:
            print(f"  {name}: with DWARF {with_dwarf} | without {without}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
