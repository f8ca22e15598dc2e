"""gdb-side helper: kdbg's commands at gdb's prompt; ``help kdbg`` lists them.

Loaded by kdbg with ``source gdb/kdbg_prompt.py`` at attach, after the vmlinux and,
when the kernel has them, Linux's own gdb scripts (``source TREE/vmlinux-gdb.py``);
sourcing it again picks up what was loaded since. Like the other helpers it imports
kdbg itself, from the checkout this file lives in; its commands live in modules of
their own beside it (their globals stay out of gdb's ``__main__``):

  kdbg                   list kdbg's commands (and Linux's lx-*) -- kdbg_help.py
  kdbg-state FILE        load the state kdbg wrote before the prompt, set $kdbg_skb
                         -- kdbg_state.py (the file's schema: kdbg/prompt/state.py)
  kdbg-skb [EXPR]        the stopped skb: device, netns, packet, length, mark,
                         conntrack, drop reason -- kdbg_skb.py
  kdbg-rule              the nftables rule from nft_do_chain's frame, beside kdbg's
                         cause -- kdbg_rule.py
  kdbg-where             the drop that armed the breakpoint, kdbg's breakpoints and
                         the guard's decisions -- kdbg_rule.py
  kdbg-journey [EXPR]    the stopped skb's hops before its drop, from the tracer's
                         journey table in the target -- kdbg_journey.py
  lx-symbols [PATH...]   kdbg's, in place of Linux's (only when Linux's scripts are
                         loaded) -- kdbg_lxsymbols.py

and a pretty-printer that prints NULL and small pointers without a per-CPU symbol
name (kdbg_values.py). Each loads in a gdb with no symbols and no target; a command
that cannot work says so in one line.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

for _kdbg_dir in (Path(__file__).resolve().parent.parent, Path(__file__).resolve().parent):
    if str(_kdbg_dir) not in sys.path:
        sys.path.insert(0, str(_kdbg_dir))

for _kdbg_module in ("kdbg_values", "kdbg_state", "kdbg_skb", "kdbg_rule", "kdbg_journey",
                     "kdbg_lxsymbols", "kdbg_help"):
    if _kdbg_module in sys.modules:
        importlib.reload(sys.modules[_kdbg_module])
    else:
        importlib.import_module(_kdbg_module)
