"""kdbg's ``lx-symbols``: which module debug files gdb should add or drop, so that gdb
holds exactly one symbol file per loaded module, at the module's current addresses.

gdb tells what it holds (``maint info sections -all-objects .text``: each objfile and
its ``.text``, parsed by :func:`loaded_modules`); the target tells its modules and their
sections (Linux's ``linux.modules.module_list()``); :func:`plan` compares the two. A
file kdbg's module follower added (``add-symbol-file FILE ADDR -s ...``,
:meth:`kdbg.symbols.droplines.ModuleDebug.gdb_command`) counts like one added here: by
its module's name and ``.text`` address, whatever the tree it came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdbg.symbols.droplines import ModuleDebug, module_files

# maint info sections: "Object file: `/path/nf_tables.ko', file type elf64-x86-64."
# then " [2]      0xffffffffc0370000->0xffffffffc039b15e at 0x000000a0: .text ALLOC ..."
_OBJFILE = re.compile(r"^Object file: `(?P<path>.*)', file type")
_TEXT = re.compile(r"^\s*\[\s*\d+\]\s+0x(?P<start>[0-9a-fA-F]+)->0x[0-9a-fA-F]+ at "
                   r"0x[0-9a-fA-F]+: \.text\s")
_MODULE_FILE = re.compile(r"\.ko(?:\.debug)?$")


@dataclass(frozen=True)
class LoadedModule:
    """A module's symbol file in gdb, and where gdb put its ``.text`` (None: unknown)."""

    path: str
    text: int | None

    @property
    def name(self) -> str:
        """The module's name as the kernel spells it (``-`` becomes ``_``)."""
        return _MODULE_FILE.sub("", Path(self.path).name).replace("-", "_")


@dataclass(frozen=True)
class TargetModule:
    """A module the target has loaded, and its sections' addresses."""

    name: str
    sections: tuple[tuple[str, int], ...]

    @property
    def text(self) -> int | None:
        return dict(self.sections).get(".text")


@dataclass(frozen=True)
class Plan:
    """What lx-symbols does: files to add and drop, and what it leaves as it is."""

    load: tuple[ModuleDebug, ...] = ()
    remove: tuple[tuple[LoadedModule, str], ...] = ()  # (file, why: gone|moved|twice)
    kept: tuple[str, ...] = ()  # already in gdb at the right address
    missing: tuple[str, ...] = ()  # no debug file under the roots


def loaded_modules(maint: str) -> list[LoadedModule]:
    """The module symbol files in gdb's ``maint info sections -all-objects .text``."""
    out: list[LoadedModule] = []
    path: str | None = None
    text: int | None = None
    for line in [*maint.splitlines(), "Object file: `', file type"]:
        m = _OBJFILE.match(line)
        if m:
            if path is not None and _MODULE_FILE.search(path):
                out.append(LoadedModule(path, text))
            path, text = m["path"], None
            continue
        t = _TEXT.match(line)
        if t and text is None:
            text = int(t["start"], 16)
    return out


def debug_files(roots: Sequence[Path]) -> dict[str, Path]:
    """Module name -> debug ``.ko`` under ``roots`` (the first root that has one wins)."""
    files: dict[str, Path] = {}
    for root in reversed(roots):
        if root.is_dir():
            files.update(module_files(root))
    return files


def plan(target: Sequence[TargetModule], loaded: Sequence[LoadedModule],
         files: Mapping[str, Path]) -> Plan:
    """Make gdb's module symbol files match the target's modules."""
    texts = {m.name: m.text for m in target}
    remove: list[tuple[LoadedModule, str]] = []
    in_place: set[str] = set()
    for lm in loaded:
        if lm.name not in texts:
            remove.append((lm, "gone"))
        elif lm.text != texts[lm.name]:
            remove.append((lm, "moved"))
        elif lm.name in in_place:
            remove.append((lm, "twice"))
        else:
            in_place.add(lm.name)
    load, missing = [], []
    for m in target:
        if m.name in in_place:
            continue
        if m.name in files and m.text is not None:
            load.append(ModuleDebug(m.name, files[m.name], tuple(sorted(m.sections))))
        else:
            missing.append(m.name)
    return Plan(tuple(load), tuple(remove), tuple(sorted(in_place)), tuple(sorted(missing)))


def remove_command(lm: LoadedModule, loaded: Sequence[LoadedModule]) -> str:
    """gdb's command that drops ``lm``: by its file name, or by its ``.text`` address
    when ``loaded`` has that file twice (an address can also be in another module's
    stale ``.init`` sections, and gdb drops the first file that covers it)."""
    if lm.text is not None and sum(x.path == lm.path for x in loaded) > 1:
        return f"remove-symbol-file -a 0x{lm.text:x}"
    return f"remove-symbol-file {lm.path}"


def report(p: Plan) -> list[str]:
    """What lx-symbols did, in a few lines."""
    lines = []
    if p.load:
        lines.append("loaded: " + ", ".join(
            f"{m.name} (.text 0x{dict(m.sections)['.text']:x})" for m in p.load))
    if p.remove:
        lines.append("removed: " + ", ".join(f"{lm.name} ({why})" for lm, why in p.remove))
    if p.kept:
        lines.append(f"already loaded: {', '.join(p.kept)}")
    if p.missing:
        lines.append(f"no debug file for: {', '.join(p.missing)}")
    return lines or ["no modules in the target"]
