"""Why a drop happened: the rule, the missing socket, the setting that decided.
See docs/architecture.md and docs/diagnose.md.

* :mod:`~kdbg.causes.finder`: :class:`CauseFinder`, a drop's cause once per cause key;
* :mod:`~kdbg.causes.notes`: the one table of reason meanings, usual causes, confirm
  commands and advice (``kdbg reasons`` prints its meanings);
* :mod:`~kdbg.causes.nftrules`: the nftables rule that dropped a packet;
* :mod:`~kdbg.causes.sockets`, :mod:`~kdbg.causes.netnsref`: a namespace's socket
  tables, the namespace by inode.
"""

from kdbg.causes.finder import CauseFinder, group_of, with_cause
from kdbg.causes.notes import Notes, meaning, notes_for

__all__ = ["CauseFinder", "Notes", "group_of", "meaning", "notes_for", "with_cause"]
