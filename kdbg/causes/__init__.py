"""Why a drop happened: the rule, the missing socket, the setting that decided, and
kdbg's notes on every reason. See docs/architecture.md and docs/diagnose.md.

* :mod:`~kdbg.causes.registry`: the causes kdbg finds, one entry per cause, keyed by
  reason (what decides it, whether it reads the stack, its finder);
* :mod:`~kdbg.causes.finder`: :class:`CauseFinder`, a drop's cause once per cause key;
* :mod:`~kdbg.causes.notes`: the one table of reason meanings, usual causes, confirm
  commands and advice (``kdbg reasons`` prints its meanings);
* :mod:`~kdbg.causes.netfilter`, :mod:`~kdbg.causes.nftrules`: the nftables rule that
  dropped a packet;
* :mod:`~kdbg.causes.counters`: a namespace's SNMP/netstat counters, and the one table
  of the counters the kernel bumps with each reason;
* :mod:`~kdbg.causes.sockets`, :mod:`~kdbg.causes.netnsref`, :mod:`~kdbg.causes.reads`:
  a namespace's socket tables, the namespace by inode, the reads finders share.
"""

from kdbg.causes.counters import LINKS, Beside, Link, NetnsCounters, beside, linked, namespaces
from kdbg.causes.finder import CauseFinder, with_cause
from kdbg.causes.notes import Notes, meaning, notes_for
from kdbg.causes.registry import stack_depth, stack_reasons

__all__ = ["LINKS", "Beside", "CauseFinder", "Link", "NetnsCounters", "beside", "linked",
           "namespaces", "Notes", "meaning", "notes_for", "stack_depth", "stack_reasons",
           "with_cause"]
