"""kdbg's ``lx-symbols`` (loaded by kdbg_prompt.py when Linux's gdb scripts are).

Linux's own lx-symbols drops every symbol file, reloads a file it guesses is "vmlinux"
and sets an internal breakpoint on do_init_module that no guard judged. In a kdbg
session it is replaced by this one, which reads the target's module list as Linux's
does (``linux.modules.module_list()`` and each module's ``sect_attrs``), adds the debug
file of each module gdb does not hold at its current address (from kdbg's module
roots and the PATHs given), drops the files of modules gone or moved, and leaves
the vmlinux and the breakpoints alone. :mod:`kdbg.prompt.modsyms` decides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kdbg_state  # type: ignore[import-not-found]

import gdb  # type: ignore[import-not-found]
from kdbg.prompt import modsyms

try:
    from linux import modules as lx_modules  # type: ignore[import-not-found]
except Exception:  # Linux's scripts not loaded (or not loadable on this kernel)
    lx_modules = None


def _sections(module: Any) -> tuple[tuple[str, int], ...]:
    """A module's sections and addresses, from its sect_attrs (Linux 6.1 .. 6.13: an
    array of module_sect_attr; later: the attribute group's bin_attrs, the address in
    each one's private)."""
    attrs = module["sect_attrs"]
    if not int(attrs):
        return ()
    attrs = attrs.dereference()
    out = []
    try:
        n = int(attrs["nsections"])
        for i in range(n):
            a = attrs["attrs"][i]
            out.append((a["battr"]["attr"]["name"].string(), int(a["address"])))
    except gdb.error:
        binattrs, i = attrs["grp"]["bin_attrs"], 0
        while int(binattrs[i]):
            a = binattrs[i].dereference()
            out.append((a["attr"]["name"].string(), int(a["private"])))
            i += 1
    return tuple(out)


def target_modules() -> list[modsyms.TargetModule]:
    """The target's loaded modules and their sections."""
    assert lx_modules is not None
    return [modsyms.TargetModule(m["name"].string(), _sections(m))
            for m in lx_modules.module_list()]


class _LxSymbols(gdb.Command):  # type: ignore[misc]
    """kdbg's lx-symbols [PATH...]: give gdb the debug files of the target's modules, at their addresses.

Files come from the PATHs given and kdbg's module roots (kdbg-state). Files of modules
gone or moved are removed. Unlike Linux's lx-symbols it never reloads the vmlinux and
sets no breakpoint.
"""  # noqa: E501

    def __init__(self) -> None:
        super().__init__("lx-symbols", gdb.COMMAND_FILES, gdb.COMPLETE_FILENAME)

    def invoke(self, arg: str, from_tty: bool) -> None:
        state = kdbg_state.current()
        roots = [Path(os.path.abspath(os.path.expanduser(p))) for p in gdb.string_to_argv(arg)]
        roots += list(state.module_roots) if state is not None else []
        try:
            target = target_modules()
            maint = gdb.execute("maint info sections -all-objects .text", to_string=True)
        except (gdb.error, gdb.MemoryError) as err:
            raise gdb.GdbError(f"lx-symbols: cannot read the target's modules: {err}") from err
        if not roots:
            gdb.write("lx-symbols: no module roots (kdbg-state gives kdbg's; or lx-symbols "
                      "PATH...): only removing stale files\n")
        loaded = modsyms.loaded_modules(maint)
        plan = modsyms.plan(target, loaded, modsyms.debug_files(roots))
        for lm, _why in plan.remove:
            gdb.execute(modsyms.remove_command(lm, loaded), to_string=True)
            loaded.remove(lm)
        failed = []
        for mod in plan.load:
            try:
                gdb.execute(mod.gdb_command(), to_string=True)
            except gdb.error as err:
                failed.append(f"{mod.name} ({err})")
        gdb.write(f"lx-symbols (kdbg's): {len(target)} modules in the target\n")
        for line in modsyms.report(plan):
            gdb.write(f"  {line}\n")
        if failed:
            gdb.write(f"  failed: {', '.join(failed)}\n")


if lx_modules is not None:
    _LxSymbols()
