"""NULL and small integers never named after a per-CPU symbol (loaded by kdbg_prompt.py).

x86-64 links the per-CPU variables at 0 (``.data..percpu``, up to ``__per_cpu_end``), so
gdb names a NULL pointer ``0x0 <fixed_percpu_data>`` and a small integer after whatever
per-CPU variable sits there. A pretty-printer prints every pointer below
``&__per_cpu_end`` (1 MiB without symbols) as plain ``0x...``: in ``print``, in the
members of ``print *skb``, in ``info locals`` and in ``bt``'s arguments. Pointers above
it keep their ``<symbol>`` (``&init_net`` still prints ``<init_net>``).
"""

from __future__ import annotations

from typing import Any

import gdb  # type: ignore[import-not-found]

NAME = "kdbg-small-pointers"
FALLBACK_BOUND = 1 << 20
_bound: list[int] = []  # the bound once computed; emptied when symbol files change


def bound() -> int:
    """Pointers below this are printed without a symbol."""
    if not _bound:
        value = FALLBACK_BOUND
        try:
            end = int(gdb.parse_and_eval("&__per_cpu_end"))
            # only a zero-based per-CPU area (x86-64 SMP) names small values
            if 0 < end < (1 << 32):
                value = end
        except gdb.error:
            pass
        _bound.append(value)
    return _bound[0]


def _forget(_event: Any = None) -> None:
    _bound.clear()


class _Plain:
    """A pointer printed as its bare address."""

    def __init__(self, address: int) -> None:
        self.address = address

    def to_string(self) -> str:
        return f"0x{self.address:x}"


class SmallPointers:
    """The pretty-printer lookup: a :class:`_Plain` for a pointer below :func:`bound`."""

    def __init__(self) -> None:
        self.name = NAME
        self.enabled = True

    def __call__(self, value: Any) -> _Plain | None:
        try:
            if value.type.strip_typedefs().code != gdb.TYPE_CODE_PTR:
                return None
            address = int(value)
        except (gdb.error, gdb.MemoryError, ValueError):
            return None
        return _Plain(address) if 0 <= address < bound() else None


def install() -> None:
    """Register the printer (once) and forget the bound when symbol files change."""
    gdb.pretty_printers[:] = [p for p in gdb.pretty_printers
                              if getattr(p, "name", None) != NAME]
    gdb.pretty_printers.append(SmallPointers())
    _forget()
    gdb.events.new_objfile.connect(_forget)
    gdb.events.clear_objfiles.connect(_forget)


install()
