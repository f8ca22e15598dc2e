"""Why a drop happened: the rule, the missing socket, the setting that decided.
See docs/architecture.md and docs/diagnose.md.

* :mod:`~kdbg.causes.finder`: :class:`CauseFinder`, a drop's cause once per cause key;
* :mod:`~kdbg.causes.notes`: what each reason means, usually causes, how to confirm it;
* :mod:`~kdbg.causes.nftrules`: the nftables rule that dropped a packet;
* :mod:`~kdbg.causes.sockets`, :mod:`~kdbg.causes.netnsref`: a namespace's socket
  tables, the namespace by inode.
"""

from kdbg.causes.finder import CauseFinder, group_of, with_cause

__all__ = ["CauseFinder", "group_of", "with_cause"]
