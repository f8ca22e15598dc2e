"""The layout's rules, read from the source with ``ast`` (docs/architecture.md).

Every module under kdbg/ belongs to a room: a package (``kdbg/trace/``) or a
top-level module (``kdbg/errors.py``). A room imports only the rooms its row of
:data:`ALLOWED` names (type-only imports count too), so the rooms form no cycle; a
room with a face (:data:`FACED`) is imported through it; and no module imports
another module's private name (``_x``). Between modules there is no import cycle either,
counting imports inside functions, and each import inside a function is listed in the
docs with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

KDBG = Path(__file__).resolve().parents[2] / "kdbg"

# Cross-cutting modules any room may use: the version, typed errors, repository and
# cache directories, Ctrl-C as a flag, the lifetime of child processes, the transports.
BASE = frozenset({"kdbg", "errors", "dirs", "signals", "lifetime", "transports"})

# room -> the rooms it may import (besides itself and BASE). Keep in step with the
# picture in docs/architecture.md; lowest rooms first.
ALLOWED: dict[str, frozenset[str]] = {
    "kdbg": frozenset(),
    "errors": frozenset(),
    "dirs": frozenset(),
    "signals": frozenset(),
    "lifetime": frozenset(),
    "transports": frozenset({"errors"}),  # BadInput for an unknown name
    "symbols": frozenset(),
    "trace": frozenset({"symbols"}),
    "lab": frozenset({"symbols"}),
    "guard": frozenset({"symbols"}),
    "causes": frozenset({"symbols", "trace"}),
    "hwdrops": frozenset({"symbols", "trace"}),
    "drops": frozenset({"symbols", "trace", "lab", "causes"}),
    "diagnose": frozenset({"symbols", "trace", "causes", "drops"}),
    "record": frozenset({"symbols", "trace", "lab", "drops"}),
    "exporter": frozenset({"symbols", "trace", "hwdrops"}),
    "path": frozenset({"symbols", "trace"}),
    "targetfacts": frozenset({"symbols", "lab"}),
    "prompt": frozenset({"symbols", "trace"}),
    "debugger": frozenset({"symbols", "trace", "guard", "targetfacts", "lab", "prompt"}),
    # imported by gdb's own Python too (gdb/kdbg_prompt.py): the standard library and these
    "breakwatch": frozenset({"symbols", "trace", "guard", "targetfacts", "lab", "debugger",
                             "drops", "prompt"}),
    "demo": frozenset({"symbols", "trace", "lab", "drops", "breakwatch"}),
    "doctor": frozenset({"symbols", "trace", "lab"}),
    "cli": frozenset({"symbols", "trace", "lab", "guard", "causes", "hwdrops", "drops",
                      "diagnose", "record", "exporter", "path", "targetfacts", "debugger",
                      "prompt", "breakwatch", "demo", "doctor"}),
    "__main__": frozenset({"cli"}),
}

# Rooms with a public face, their ``__init__.py``: another room imports the package
# (``from kdbg.causes import CauseFinder``), never a module inside it. cli/ takes drops/
# by its face too.
FACED = frozenset({"causes", "hwdrops", "diagnose", "record", "exporter"})
FACED_FOR_CLI = FACED | {"drops"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(KDBG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kdbg"


def imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every kdbg import in ``path``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "kdbg" or target.startswith("kdbg."):
                yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "kdbg" or alias.name.startswith("kdbg."):
                    yield alias.name, []


MODULES = sorted(KDBG.rglob("*.py"))


def room_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for path in MODULES:
        here = module_name(path)
        for target, _names in imports(path):
            if room(here) != room(target):
                edges.setdefault((room(here), room(target)), []).append(f"{here} -> {target}")
    return edges


def test_every_room_is_in_the_table() -> None:
    rooms = {room(module_name(p)) for p in MODULES}
    assert rooms <= ALLOWED.keys(), f"rooms missing from ALLOWED: {rooms - ALLOWED.keys()}"


def test_the_table_has_no_cycle() -> None:
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(r: str, trail: tuple[str, ...]) -> None:
        if seen.get(r) == 2:
            return
        assert seen.get(r) != 1, f"cycle: {' -> '.join((*trail, r))}"
        seen[r] = 1
        for below in ALLOWED[r] | (BASE - {r} if r not in BASE else set()):
            visit(below, (*trail, r))
        seen[r] = 2

    for r in ALLOWED:
        visit(r, ())


def test_rooms_import_only_rooms_below() -> None:
    wrong = [line for (src, dst), lines in room_edges().items()
             if dst not in ALLOWED[src] and not (dst in BASE and src not in BASE)
             for line in lines]
    assert not wrong, "imports against the dependency order:\n" + "\n".join(wrong)


def test_no_cycle_between_rooms() -> None:
    graph: dict[str, set[str]] = {}
    for src, dst in room_edges():
        graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}

    def visit(r: str, trail: tuple[str, ...]) -> None:
        if state.get(r) == 2:
            return
        assert state.get(r) != 1, f"import cycle between rooms: {' -> '.join((*trail, r))}"
        state[r] = 1
        for nxt in graph.get(r, ()):
            visit(nxt, (*trail, r))
        state[r] = 2

    for r in list(graph):
        visit(r, ())


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(KDBG.parent)))
def test_no_private_name_imported_across_modules(path: Path) -> None:
    here = module_name(path)
    private = [f"{target}.{name}" for target, names in imports(path) for name in names
               if name.startswith("_") and not name.startswith("__") and target != here]
    assert not private, f"{here} imports private names: {private}"


def test_faced_rooms_are_imported_through_their_face() -> None:
    wrong = []
    for path in MODULES:
        here = module_name(path)
        faced = FACED_FOR_CLI if room(here) == "cli" else FACED
        for target, _names in imports(path):
            there = room(target)
            if there in faced and there != room(here) and target != f"kdbg.{there}":
                wrong.append(f"{here} -> {target}")
    assert not wrong, "imports past a room's face:\n" + "\n".join(wrong)


# -- modules --------------------------------------------------------------------------


def module_edges() -> dict[str, set[str]]:
    """module -> the kdbg modules it imports, at its top or inside a function (``from
    PKG import NAME`` counts as importing ``PKG.NAME`` when that is a module)."""
    known = {module_name(p) for p in MODULES}
    edges: dict[str, set[str]] = {}
    for path in MODULES:
        here = module_name(path)
        for target, names in imports(path):
            subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in known}
            for dst in subs or ({target} if target in known else set()):
                if dst != here:
                    edges.setdefault(here, set()).add(dst)
            if subs and len(subs) < len(names) and target in known and target != here:
                edges.setdefault(here, set()).add(target)  # names from the package too
    return edges


def test_no_cycle_between_modules() -> None:
    """Not even one hidden by an import inside a function (Python would run it, but the
    two modules could no longer be read, tested or moved one at a time)."""
    edges = module_edges()
    state: dict[str, int] = {}

    def visit(m: str, trail: tuple[str, ...]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, f"import cycle between modules: {' -> '.join((*trail, m))}"
        state[m] = 1
        for nxt in sorted(edges.get(m, ())):
            visit(nxt, (*trail, m))
        state[m] = 2

    for m in sorted(edges):
        visit(m, ())


def imports_inside_functions() -> set[tuple[str, str]]:
    """(module, what it imports) for every import statement inside a function."""
    found = set()
    for path in MODULES:
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    found.add((module_name(path), node.module or ""))
                elif isinstance(node, ast.Import):
                    found |= {(module_name(path), a.name) for a in node.names}
    return found


def documented_imports_inside_functions() -> set[tuple[str, str]]:
    """The rows of docs/architecture.md's table of imports inside functions, each with
    its reason."""
    text = (KDBG.parent / "docs" / "architecture.md").read_text()
    section = text.split("| why inside a function |", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("kdbg"):
            assert cells[2], f"no reason given for {cells[0]} importing {cells[1]}"
            rows.add((cells[0], cells[1]))
    return rows


def test_every_import_inside_a_function_is_listed_with_its_reason() -> None:
    found, listed = imports_inside_functions(), documented_imports_inside_functions()
    assert found == listed, (f"not in docs/architecture.md: {sorted(found - listed)}; "
                             f"listed but gone: {sorted(listed - found)}")
