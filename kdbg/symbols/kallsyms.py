"""Kernel symbols from ``/proc/kallsyms`` (or a copy of it from a lab guest).

Addresses are symbolized as ``symbol+0xoff`` the way the kernel's ``%pS`` does,
and symbol expressions (``tcp_v4_rcv``, ``nft_do_chain+0x4c``, ``0xffffffff81...``)
are resolved back to addresses, with the closest names suggested on a miss.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kdbg.errors import BadInput, ProbeUnavailable, UnknownSymbol

_TEXT_TYPES = frozenset("tTwW")
_EXPR = re.compile(r"^(?P<sym>[A-Za-z_.$][\w.$]*)(?:\+(?P<off>0x[0-9a-fA-F]+|\d+))?$")


@dataclass(frozen=True)
class Symbol:
    """One kallsyms line: a name at an address, its type letter and module, if any."""

    name: str
    address: int
    kind: str
    module: str | None = None


@dataclass(frozen=True)
class Location:
    """An address named as ``symbol+offset`` (``symbol`` is None outside known text)."""

    address: int
    symbol: str | None
    offset: int
    module: str | None = None

    def __str__(self) -> str:
        if self.symbol is None:
            return f"0x{self.address:x}"
        text = f"{self.symbol}+0x{self.offset:x}"
        return f"{text} [{self.module}]" if self.module else text


@dataclass(frozen=True)
class AddressRange:
    """Half-open ``[start, end)``; a ``sym+off`` expression gives a one-byte range."""

    start: int
    end: int
    label: str

    def __contains__(self, address: object) -> bool:
        return isinstance(address, int) and self.start <= address < self.end


class Kallsyms:
    """A symbol table for one kernel, as read from its kallsyms text."""

    def __init__(self, symbols: Iterable[Symbol], *, text_end: int | None = None) -> None:
        syms = sorted(
            (s for s in symbols if s.kind in _TEXT_TYPES),
            key=lambda s: (s.address, _rank(s)),
        )
        # Keep one name per address: the best-ranked one (global over local, no aliases).
        self._text: list[Symbol] = []
        for sym in syms:
            if self._text and self._text[-1].address == sym.address:
                continue
            self._text.append(sym)
        self._addrs = [s.address for s in self._text]
        self._by_name: dict[str, list[Symbol]] = {}
        for sym in syms:
            self._by_name.setdefault(sym.name, []).append(sym)
        self._text_end = text_end

    # -- construction -------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Kallsyms:
        """Parse kallsyms text (``ADDR TYPE NAME [MODULE]`` per line)."""
        symbols: list[Symbol] = []
        text_end = None
        nonzero = False
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            nonzero = nonzero or addr != 0
            module = parts[3].strip("[]") if len(parts) > 3 else None
            if parts[2] == "_etext" and module is None:
                text_end = addr
            symbols.append(Symbol(parts[2], addr, parts[1], module))
        if symbols and not nonzero:
            raise ProbeUnavailable(
                "kallsyms shows every address as zero",
                hint="run as root, or set /proc/sys/kernel/kptr_restrict to 0",
            )
        return cls(symbols, text_end=text_end)

    @classmethod
    def load(cls, path: str | Path = "/proc/kallsyms") -> Kallsyms:
        """Read a kallsyms file (the running kernel's by default)."""
        try:
            return cls.parse(Path(path).read_text())
        except OSError as err:
            raise ProbeUnavailable(f"cannot read {path}: {err.strerror}") from err

    # -- queries ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._text)

    def lookup(self, address: int) -> Location:
        """Name ``address`` as ``symbol+offset``; unknown outside kernel and module text."""
        i = bisect.bisect_right(self._addrs, address) - 1
        if i < 0:
            return Location(address, None, 0)
        sym = self._text[i]
        if sym.module is None and self._text_end is not None and address >= self._text_end:
            # Past _etext only module (and BPF/ftrace) text is valid; a core name is a guess.
            return Location(address, None, 0)
        return Location(address, sym.name, address - sym.address, sym.module)

    def symbol(self, name: str, module: str | None = None) -> Symbol:
        """The text symbol called ``name`` (in ``module`` if given), or UnknownSymbol."""
        cands = [s for s in self._by_name.get(name, []) if module is None or s.module == module]
        if not cands:
            raise UnknownSymbol(f"unknown kernel symbol {name!r}", hint=self._suggest(name))
        # Prefer the core kernel's, then a global definition.
        return min(cands, key=lambda s: (s.module is not None, _rank(s)))

    def size_of(self, sym: Symbol) -> int:
        """Bytes from ``sym`` to the next text symbol (an upper bound on its length)."""
        i = bisect.bisect_right(self._addrs, sym.address)
        if i < len(self._addrs):
            return self._addrs[i] - sym.address
        return 1

    def resolve(self, expr: str) -> AddressRange:
        """``SYM`` → the function's range; ``SYM+OFF`` or ``0xADDR`` → that byte."""
        expr = expr.strip()
        if re.fullmatch(r"0x[0-9a-fA-F]+", expr):
            addr = int(expr, 16)
            return AddressRange(addr, addr + 1, str(self.lookup(addr)))
        m = _EXPR.match(expr)
        if not m:
            raise BadInput(f"cannot parse location {expr!r}", hint="use SYM, SYM+0xOFF or 0xADDR")
        sym = self.symbol(m["sym"])
        if m["off"] is None:
            return AddressRange(sym.address, sym.address + self.size_of(sym), sym.name)
        off = int(m["off"], 0)
        if off >= self.size_of(sym):
            raise BadInput(f"{expr}: offset is past the end of {sym.name}")
        return AddressRange(sym.address + off, sym.address + off + 1, f"{sym.name}+0x{off:x}")

    def names(self) -> Iterable[str]:
        return self._by_name.keys()

    def _suggest(self, name: str) -> str | None:
        low = name.lower()
        pool = [n for n in self._by_name if low[:4] in n.lower()] or list(self._by_name)
        close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
        return "closest: " + ", ".join(close) if close else None


def _rank(sym: Symbol) -> tuple[int, int, int]:
    """Sort key among symbols at one address: globals first, then no alias prefixes."""
    alias = sym.name.startswith(("__pi_", "srso_alias", "__cfi_", "__pfx_"))
    return (alias, sym.kind.islower(), sym.name.startswith("_"))
