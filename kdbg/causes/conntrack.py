"""When conntrack's own hook functions cannot have dropped a packet, from the kernel's
facts at the drop: the entry the skb carries (the drop record's ctinfo and status bits)
and the namespace's conntrack statistics (``/proc/net/stat/nf_conntrack``).

Read from net/netfilter/nf_conntrack_core.c and nf_conntrack_proto.c (6.1 and 6.12):

- ``nf_conntrack_in`` (run by the hook functions ``ipv4_conntrack_in``,
  ``ipv4_conntrack_local``, ``ipv6_conntrack_in``, ``ipv6_conntrack_local``) returns
  NF_DROP only with ``skb->_nfct`` 0: ``resolve_normal_ct`` failed before ``nf_ct_set``,
  or ``nf_conntrack_handle_packet`` refused the packet and the entry was put and
  cleared (a template is cleared on entry). A packet already carrying an entry that is
  not a template is accepted at once ("Previously seen").
- ``ipv6_defrag`` accepts such a packet at once too, and never attaches an entry;
  ``ipv4_conntrack_defrag`` never returns NF_DROP (it accepts, or steals a fragment).
  So a packet that carries a non-template entry at the drop was dropped by none of
  these.
- The confirm hook (``nf_confirm`` on 6.12; ``ipv4_confirm`` and ``ipv6_confirm``, which
  call it, on 6.1) accepts a packet without an entry. With one, it drops only through
  the entry's helper (the helper extension is only added by ``nf_ct_helper_ext_add``,
  which sets IPS_HELPER), through sequence adjustment (IPS_SEQ_ADJUST), or in
  ``__nf_conntrack_confirm``. That one accepts every packet of the reply direction, and
  otherwise drops (a) an entry another packet confirmed meanwhile (a ``WARN_ON_ONCE``:
  the kernel is then tainted W, and the entry is confirmed at the drop) or (b) one that
  is dying, whose hash chain is too long or that lost a clash: each of these bumps the
  namespace's ``insert_failed`` statistic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from kdbg.causes import netnsref
from kdbg.causes.netnsref import NetnsRef
from kdbg.causes.nfhooks import in_netns
from kdbg.errors import KdbgError
from kdbg.trace.event import DropEvent

STAT_FILE = "/proc/thread-self/net/stat/nf_conntrack"
OWN_STAT_FILE = "/proc/net/stat/nf_conntrack"
TAINTED = "/proc/sys/kernel/tainted"
TAINT_WARN = 1 << 9  # TAINT_WARN (include/linux/panic.h): a WARN*() fired
# enum ip_conntrack_status (include/uapi/linux/netfilter/nf_conntrack_common.h)
IPS_CONFIRMED, IPS_SEQ_ADJUST, IPS_TEMPLATE, IPS_HELPER = 1 << 3, 1 << 6, 1 << 11, 1 << 13

IN_FUNCS = frozenset({"ipv4_conntrack_in", "ipv4_conntrack_local", "ipv6_conntrack_in",
                      "ipv6_conntrack_local", "ipv4_conntrack_defrag", "ipv6_defrag"})
CONFIRM_FUNCS = frozenset({"nf_confirm", "ipv4_confirm", "ipv6_confirm"})
FUNCS = IN_FUNCS | CONFIRM_FUNCS


def parse_stats(text: str) -> dict[str, int]:
    """``/proc/net/stat/nf_conntrack``: each column summed over the CPUs' rows (hex);
    ``entries``, the same on every row, is kept once."""
    lines = text.splitlines()
    if not lines:
        raise KdbgError("the conntrack statistics are empty")
    names = lines[0].split()
    sums = dict.fromkeys(names, 0)
    for row in lines[1:]:
        vals = row.split()
        if len(vals) != len(names):
            raise KdbgError(f"unexpected conntrack statistics row: {row!r}")
        for name, v in zip(names, vals, strict=True):
            sums[name] = int(v, 16) if name == "entries" else sums[name] + int(v, 16)
    return sums


def read_insert_failed(ns: NetnsRef) -> int:
    """``ns``'s conntrack ``insert_failed`` (summed over CPUs); a KdbgError when conntrack
    keeps no statistics there (not loaded)."""
    def work() -> int:
        path = OWN_STAT_FILE if ns.own else STAT_FILE
        try:
            with open(path) as f:
                text = f.read()
        except OSError as err:
            raise KdbgError(f"no conntrack statistics: {err.strerror}") from None
        stats = parse_stats(text)
        if "insert_failed" not in stats:
            raise KdbgError("the conntrack statistics have no insert_failed column")
        return stats["insert_failed"]
    value: int = in_netns(ns, work)
    return value


class InsertFailed:
    """Namespaces' ``insert_failed`` read once before the watch attached (its
    baseline): a drop the watch saw afterwards, in a namespace whose count has not
    moved since, was not one of the confirm hook's insert failures."""

    def __init__(self) -> None:
        self.before: dict[int, int] = {}
        self.used: set[int] = set()  # namespaces where an unmoved count ruled one out

    def baseline(self, refs: Iterable[NetnsRef] | Callable[[], Iterable[NetnsRef]]
                 ) -> None:
        """Read each of ``refs`` now, before the watch attaches; a namespace without
        conntrack statistics is left out."""
        if not os.path.exists(OWN_STAT_FILE):
            return  # conntrack is not loaded: no namespace has statistics
        for ns in (refs() if callable(refs) else refs):
            try:
                self.before[ns.inode] = read_insert_failed(ns)
            except KdbgError:
                continue

    def unmoved(self, ns: NetnsRef) -> int | None:
        """``ns``'s count when it has not moved since the baseline (None: no baseline,
        unreadable, or it moved)."""
        was = self.before.get(ns.inode)
        if was is None:
            return None
        try:
            now = read_insert_failed(ns)
        except KdbgError:
            return None
        if now != was:
            return None
        self.used.add(ns.inode)
        return now

    def moved(self, ns: NetnsRef) -> tuple[int, int] | None:
        """The baseline and now when ``ns``'s count moved since (None: it did not, or
        it cannot be told)."""
        was = self.before.get(ns.inode)
        try:
            now = read_insert_failed(ns) if was is not None else None
        except KdbgError:
            return None
        return (was, now) if was is not None and now is not None and now != was else None


def namespaces() -> list[NetnsRef]:
    """kdbg's own namespace and every one named under /var/run/netns."""
    own = os.stat("/proc/self/ns/net").st_ino
    return [NetnsRef(own, "/proc/self/ns/net", own=True),
            *(NetnsRef(ino, str(netnsref.NETNS_DIR / name), name=name)
              for name, ino in netnsref.named() if ino != own)]


def tainted_warn() -> bool | None:
    """Whether a WARN fired in this kernel since boot (None: cannot tell)."""
    try:
        with open(TAINTED) as f:
            return bool(int(f.read().strip() or "0") & TAINT_WARN)
    except (OSError, ValueError):
        return None


def why_not(fn: str, ev: DropEvent, ns: NetnsRef | None, stats: InsertFailed) -> str | None:
    """Why conntrack's hook function ``fn`` cannot have dropped ``ev``'s packet, or None
    when it may have (or ``fn`` is not one of conntrack's)."""
    state, status = ev.ct_state, ev.ct_status
    entry = state in ("new", "established", "related")
    if fn in IN_FUNCS:
        if entry and status is not None and not status & IPS_TEMPLATE:
            return (f"{fn} never leaves a conntrack entry on a packet it drops, and this one "
                    f"carries one (ct state {state})")
        return None
    if fn not in CONFIRM_FUNCS:
        return None
    if state in ("invalid", "untracked"):
        return f"{fn} accepts a packet without a conntrack entry, as this one is ({state})"
    if not entry or status is None or status & (IPS_HELPER | IPS_SEQ_ADJUST):
        return None
    plain = "its conntrack entry has no helper and no sequence adjustment"
    if ev.ct_reply:
        return f"{fn}: {plain}, and it accepts every packet of the reply direction"
    if status & IPS_CONFIRMED and tainted_warn() is not False:
        return None  # the WARN path: confirmed meanwhile by another packet
    if ns is None:
        return None
    count = stats.unmoved(ns)
    if count is None:
        return None
    return (f"{fn}: {plain}, and the namespace's conntrack insert_failed stayed {count} "
            "from before the watch attached to after the drop")
