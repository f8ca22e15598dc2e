"""Kernel symbols from ``/proc/kallsyms`` (or a copy of it from a lab guest).

Addresses are symbolized as ``symbol+0xoff`` the way the kernel's ``%pS`` does, an
address no known text covers as ``0xADDR [?]``, and symbol expressions (``tcp_v4_rcv``,
``nft_do_chain+0x4c``, ``0xffffffff81...``) are resolved back to addresses, with the
closest names suggested on a miss.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kdbg.errors import BadInput, ProbeUnavailable, UnknownSymbol
from kdbg.symbols.bpfjit import BPF_MODULE, JitedImage

_TEXT_TYPES = frozenset("tTwW")
_EXPR = re.compile(r"^(?P<sym>[A-Za-z_.$][\w.$]*)(?:\+(?P<off>0x[0-9a-fA-F]+|\d+))?$")


@dataclass(frozen=True, slots=True)
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
            return f"0x{self.address:x} [?]"
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


@dataclass(frozen=True)
class ModuleSpan:
    """A loaded module's memory, ``[start, start + size)``, as ``/proc/modules`` shows it.

    Before Linux 6.4 that is the module's core layout (text, then its data); since the
    change "module: replace module_layout with module_memory" (in v6.4) it is the text's
    base and the size of all the module's memory, so it may reach past the text.
    """

    name: str
    start: int
    size: int

    def __contains__(self, address: object) -> bool:
        return isinstance(address, int) and self.start <= address < self.start + self.size


def parse_modules(text: str) -> tuple[ModuleSpan, ...]:
    """``/proc/modules`` lines (``nf_tables 311296 3 nft_compat, Live 0xffffffffc0370000``)."""
    spans = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or not parts[1].isdigit():
            continue
        try:
            start = int(parts[5], 16)
        except ValueError:
            continue
        if start:
            spans.append(ModuleSpan(parts[0], start, int(parts[1])))
    return tuple(spans)


def modules_key(text: str) -> str:
    """What identifies a ``/proc/modules`` list for naming: each module's name and
    address (refcounts and states change without changing any symbol)."""
    rows = sorted(f"{p[0]}@{p[5]}" for p in (ln.split() for ln in text.splitlines())
                  if len(p) >= 6)
    return hashlib.sha256(" ".join(rows).encode()).hexdigest()[:12]


class Kallsyms:
    """A symbol table for one kernel, as read from its kallsyms text.

    With ``modules`` (the target's ``/proc/modules`` at the same moment), an address
    past the core kernel's text is named only when it lies inside the span of the
    module its nearest symbol belongs to; anything else is unknown (``0xADDR [?]``),
    never the nearest symbol of another module (one loaded since, say).
    """

    def __init__(self, symbols: Iterable[Symbol], *, text_end: int | None = None,
                 modules: Iterable[ModuleSpan] | None = None) -> None:
        cols = Columns([], [], [], [])
        for s in symbols:
            if s.kind in _TEXT_TYPES:
                cols.add(s.address, s.kind, s.name, s.module)
        self._set(cols, text_end, modules)

    def _set(self, cols: Columns, text_end: int | None,
             modules: Iterable[ModuleSpan] | None) -> None:
        """Keep the text symbols of ``cols`` sorted by address, one name per address, the
        best-ranked (global over local, no aliases), in parallel lists (a kernel has
        120,000 of them: no object per symbol)."""
        self._addrs: list[int] = []
        self._names: list[str] = []
        self._kinds: list[str] = []
        self._mods: list[str | None] = []
        self._others: list[Symbol] = []  # the other names of an address, for lookups by name
        for i in sorted(range(len(cols.addrs)), key=cols.addrs.__getitem__):
            addr, kind, name, module = cols.addrs[i], cols.kinds[i], cols.names[i], cols.mods[i]
            if self._addrs and self._addrs[-1] == addr:
                # Several names at one address: the best-ranked stays.
                if _rank_of(name, kind) >= _rank_of(self._names[-1], self._kinds[-1]):
                    self._others.append(Symbol(name, addr, kind, module))
                    continue
                self._others.append(Symbol(self._names[-1], addr, self._kinds[-1],
                                           self._mods[-1]))
                self._names[-1], self._kinds[-1], self._mods[-1] = name, kind, module
                continue
            self._addrs.append(addr)
            self._names.append(name)
            self._kinds.append(kind)
            self._mods.append(module)
        self._names_index: dict[str, list[Symbol]] | None = None
        self._jited: list[JitedImage] = []
        self._text_end = text_end
        self.modules: dict[str, ModuleSpan] | None = (
            None if modules is None else {m.name: m for m in modules})

    @property
    def _by_name(self) -> dict[str, list[Symbol]]:
        """Symbols by name, made on the first lookup by name (filters, the guard)."""
        if self._names_index is None:
            index: dict[str, list[Symbol]] = {}
            rows = zip(self._addrs, self._kinds, self._names, self._mods, strict=True)
            for sym in [*(Symbol(n, a, k, m) for a, k, n, m in rows), *self._others]:
                index.setdefault(sym.name, []).append(sym)
            self._names_index = index
        return self._names_index

    # -- construction -------------------------------------------------------

    @classmethod
    def parse(cls, text: str, modules: str | None = None) -> Kallsyms:
        """Parse kallsyms text (``ADDR TYPE NAME [MODULE]`` per line), and optionally the
        ``/proc/modules`` text read with it (see the class docstring)."""
        cols, text_end = _parse(text.splitlines())
        table = cls.__new__(cls)
        table._set(cols, text_end, None if modules is None else parse_modules(modules))
        return table

    @classmethod
    def load(cls, path: str | Path = "/proc/kallsyms") -> Kallsyms:
        """Read a kallsyms file (the running kernel's by default, with ``/proc/modules``).

        A copy ``NAME.txt`` is read with ``NAME.modules`` when that file exists: a copy
        of the target's ``/proc/modules`` taken with it (the lab writes both)."""
        path = Path(path)
        modules = Path("/proc/modules") if str(path) == "/proc/kallsyms" else \
            path.with_suffix(".modules")
        try:
            spans = parse_modules(modules.read_text()) if modules.exists() else None
            with path.open(errors="replace") as lines:  # line by line: no 5 MB copy
                cols, text_end = _parse(lines)
        except OSError as err:
            raise ProbeUnavailable(f"cannot read {path}: {err.strerror}") from err
        table = cls.__new__(cls)
        table._set(cols, text_end, spans)
        return table

    # -- queries ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._addrs)

    def add_jited(self, images: Iterable[JitedImage]) -> None:
        """Name the JITed BPF functions ``images`` from now on (kallsyms gives them no
        size and no module span; kdbg read both from the program, :mod:`bpfjit`)."""
        known = {(j.address, j.size) for j in self._jited}
        self._jited += [j for j in images if (j.address, j.size) not in known]

    def jited_at(self, address: int) -> JitedImage | None:
        """The JITed BPF function added with :meth:`add_jited` that holds ``address``."""
        return next((j for j in self._jited if address in j), None)

    def lookup(self, address: int) -> Location:
        """Name ``address`` as ``symbol+offset``; unknown outside kernel and module text."""
        jit = self.jited_at(address) if self._jited else None
        if jit is not None:
            return Location(address, jit.name, address - jit.address, BPF_MODULE)
        i = bisect.bisect_right(self._addrs, address) - 1
        if i < 0:
            return Location(address, None, 0)
        module = self._mods[i]
        if self._text_end is not None and address >= self._text_end:
            # Past _etext only module (and BPF/ftrace) text is valid; a core name is a guess.
            if module is None:
                return Location(address, None, 0)
            if self.modules is not None:
                span = self.modules.get(module)
                if span is None or address not in span:
                    return Location(address, None, 0)
        return Location(address, self._names[i], address - self._addrs[i], module)

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


class LiveKallsyms(Kallsyms):
    """The running kernel's table, kept true as modules load and unload.

    A lookup past the core kernel's text looks at ``/proc/modules`` (at most once per
    ``every`` seconds; for an address the table cannot name, which a module loaded since
    it was read would explain, at most once per ``unknown_every``); when its module list
    moved, kallsyms is read again before the address is named. Core addresses never cost
    a read.
    """

    def __init__(self, kallsyms: str | Path = "/proc/kallsyms",
                 modules: str | Path = "/proc/modules", *, every: float = 1.0,
                 unknown_every: float = 0.05) -> None:
        self._paths = (Path(kallsyms), Path(modules))
        self._every, self._unknown_every = every, min(every, unknown_every)
        self._looked = 0.0
        self._key = ""
        self._read()

    def _read(self) -> None:
        ks, mods = self._paths
        looked = time.monotonic()  # the table is as old as its module list
        try:
            mod_text = mods.read_text() if mods.exists() else None
            with ks.open(errors="replace") as lines:
                cols, text_end = _parse(lines)
        except OSError as err:
            raise ProbeUnavailable(f"cannot read {ks}: {err.strerror}") from err
        self._key = modules_key(mod_text or "")
        self._looked = looked
        spans = None if mod_text is None else parse_modules(mod_text)
        self._set(cols, text_end, spans)  # the table, afresh

    def _moved(self, every: float) -> bool:
        now = time.monotonic()
        if now - self._looked < every:
            return False
        self._looked = now
        try:
            return modules_key(self._paths[1].read_text()) != self._key
        except OSError:
            return False

    def lookup(self, address: int) -> Location:
        if self._text_end is None or address < self._text_end:
            return super().lookup(address)
        found = super().lookup(address)
        every = self._every if found.symbol is not None else self._unknown_every
        if self._moved(every):
            self._read()
            found = super().lookup(address)
        return found


@dataclass
class Columns:
    """Text symbols as parsed: addresses, types, names and modules, in file order."""

    addrs: list[int]
    kinds: list[str]
    names: list[str]
    mods: list[str | None]

    def add(self, addr: int, kind: str, name: str, module: str | None) -> None:
        self.addrs.append(addr)
        self.kinds.append(kind)
        self.names.append(name)
        self.mods.append(module)


def _parse(lines: Iterable[str]) -> tuple[Columns, int | None]:
    """The text symbols of kallsyms ``lines`` (``ADDR TYPE NAME [MODULE]``), and the end
    of core text."""
    cols = Columns([], [], [], [])
    text_end = None
    seen = nonzero = False
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        seen, nonzero = True, nonzero or addr != 0
        module = parts[3].strip("[]") if len(parts) > 3 else None
        if parts[2] == "_etext" and module is None:
            text_end = addr
        if parts[1] in _TEXT_TYPES:
            cols.add(addr, parts[1], parts[2], module)
    if seen and not nonzero:
        raise ProbeUnavailable(
            "kallsyms shows every address as zero",
            hint="run as root or with CAP_SYSLOG, and /proc/sys/kernel/kptr_restrict at 0 or 1",
        )
    return cols, text_end


def _rank(sym: Symbol) -> tuple[int, int, int]:
    """Sort key among symbols at one address: globals first, then no alias prefixes."""
    return _rank_of(sym.name, sym.kind)


def _rank_of(name: str, kind: str) -> tuple[int, int, int]:
    alias = name.startswith(("__pi_", "srso_alias", "__cfi_", "__pfx_"))
    return (alias, kind.islower(), name.startswith("_"))
