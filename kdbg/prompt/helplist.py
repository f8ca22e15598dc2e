"""What gdb's ``help kdbg`` lists: kdbg's commands at the prompt and, when the kernel's
own gdb scripts are loaded, Linux's ``lx-*`` commands and ``$lx_*`` functions, one line
each, taken from gdb's own ``help all`` and ``help function``."""

from __future__ import annotations

import re

# "lx-dmesg -- Print Linux kernel log buffer." (aliases: "name, alias -- doc");
# "function lx_current -- Return current task."
_COMMAND = re.compile(r"^(?P<name>[\w-]+)(?:, [\w-]+)* -- (?P<doc>.*)$")
_FUNCTION = re.compile(r"^function (?P<name>\w+) -- (?P<doc>.*)$")

# kdbg's own first, in this order; any other kdbg-* after them.
KDBG_ORDER = ("kdbg-skb", "kdbg-rule", "kdbg-journey", "kdbg-where", "kdbg-state", "kdbg-done",
              "kdbg-break", "kdbg-guard", "kdbg-sym", "kdbg-kallsyms", "lx-symbols")
KDBG_MARK = "kdbg's "  # a doc that starts so is kdbg's command (its lx-symbols)
# kdbg's own plumbing, run by kdbg and its hooks, not by hand
KDBG_INTERNAL = frozenset({"kdbg-refuse", "kdbg-linux"})


def commands(help_all: str) -> dict[str, str]:
    """Command name -> the first line of its doc, from ``help all``."""
    found: dict[str, str] = {}
    for line in help_all.splitlines():
        m = _COMMAND.match(line)
        if m:
            found.setdefault(m["name"], m["doc"].strip())
    return found


def functions(help_function: str) -> dict[str, str]:
    """Convenience function name -> the first line of its doc, from ``help function``."""
    return {m["name"]: m["doc"].strip() for m in map(_FUNCTION.match, help_function.splitlines())
            if m}


def _line(name: str, doc: str) -> str:
    return f"  {doc}" if doc.startswith(name + " ") or doc.startswith(name + ":") else \
        f"  {name} -- {doc}"


def listing(cmds: dict[str, str], funcs: dict[str, str]) -> str:
    """The text of ``help kdbg``."""
    ours = [n for n in KDBG_ORDER if n in cmds and (n.startswith("kdbg")
                                                    or cmds[n].startswith(KDBG_MARK))]
    ours += sorted(n for n in cmds if n.startswith("kdbg-") and n not in ours
                   and n not in KDBG_INTERNAL)
    lines = ["kdbg's commands at this prompt:"]
    lines += [_line(n, cmds[n]) for n in ours]
    linux = sorted(n for n in cmds if n.startswith("lx-") and n not in ours)
    lx_funcs = sorted(n for n in funcs if n.startswith("lx_"))
    if linux or lx_funcs:
        lines.append("Linux's own gdb helpers (scripts/gdb of this kernel's source):")
        lines += [_line(n, cmds[n]) for n in linux]
        lines += [f"  ${n}() -- {funcs[n]}" for n in lx_funcs]
    else:
        lines.append("Linux's own gdb helpers (lx-dmesg, lx-ps, $lx_current(), ...) are not "
                     "loaded: source TREE/vmlinux-gdb.py")
    return "\n".join(lines)
