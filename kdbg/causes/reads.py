"""What a cause's finder is handed: the drop (with its namespace and stack), and the
reads of that namespace, shared between cause keys.

Every read goes through the namespace (``nsenter --net``) and is read-only: ``nft``,
``/proc/net``, sysctls, ``ip route get``. A read is kept ``ttl`` seconds for every
cause key of the same namespace, and a failed read (a :class:`KdbgError`) is kept as
long, so a vanished namespace is not asked again for each drop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kdbg.causes.conntrack import InsertFailed
from kdbg.causes.netnsref import NetnsCache, NetnsRef
from kdbg.causes.nftgen import Generations
from kdbg.causes.nftrules import Ruleset
from kdbg.errors import KdbgError
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.trace.cause import Cause
from kdbg.trace.event import DropEvent

MARK = "== kdbg:"


@dataclass(frozen=True)
class Drop:
    """One drop as a finder sees it: the event, the namespace it happened in (None when
    it carries none or it could not be named) and its kernel stack's symbols, innermost
    first (None when the stack was not captured)."""

    event: DropEvent
    ns: NetnsRef | None
    stack: Sequence[str | None] | None


class TtlCache:
    """Values kept ``ttl`` seconds by key, made again after that."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl, self.clock = ttl, clock
        self._store: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value kept for ``key``, or ``make()``'s, kept from now on."""
        now = self.clock()
        hit = self._store.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = make()
        self._store[key] = (now, value)
        return value


class NetnsReads:
    """The namespace reads every finder shares, and what the netfilter finder noted
    about the rules that decided (to notice a rule changed since its drop)."""

    def __init__(self, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 kallsyms: Callable[[], Kallsyms] | None = None) -> None:
        self.netns = NetnsCache()
        # the watch's kallsyms, for the finders that name kernel addresses (None: their own)
        self.kallsyms = kallsyms
        # NETFILTER_DROP: the hook functions on every cause (kdbg diagnose), not only on
        # one no nftables rule explains
        self.list_hooks = False
        self._reads = TtlCache(ttl, clock)
        self.generations = Generations()
        # netns inode -> (nf_tables generation, the ruleset read at it)
        self.rulesets: dict[int, tuple[int, Ruleset]] = {}
        # (netns, rule ident) -> the deciding rule's fingerprint
        self.fingerprints: dict[tuple[Any, ...], str] = {}
        # namespaces' conntrack insert_failed over time (rules out conntrack's confirm)
        self.insert_failed = InsertFailed()

    def read(self, what: str, ns: NetnsRef, make: Callable[[], Any]) -> Any:
        """``make()``, shared by every cause key of ``ns`` for ``ttl`` s; a KdbgError is
        kept (and raised) as well. ``what`` names the read (one name, one read)."""
        def attempt() -> Any:
            try:
                return make()
            except KdbgError as err:
                return err
        value = self._reads.get((what, ns.inode), attempt)
        if isinstance(value, KdbgError):
            raise value
        return value

    def sysctls(self, ns: NetnsRef, names: Sequence[str], what: str) -> dict[str, str | None]:
        """The values of sysctls ``names`` in ``ns`` (None: unreadable), by name; one read
        shared as :meth:`read`'s are."""
        vals = self.read(what, ns, lambda: read_files(ns, [sysctl_path(n) for n in names]))
        return {n: vals.get(sysctl_path(n)) for n in names}


def read_files(ns: NetnsRef, paths: Sequence[str]) -> dict[str, str | None]:
    """The contents of ``paths`` (sysctls under /proc/sys/net are per namespace) as seen
    in ``ns``; None for a file that cannot be read."""
    script = f'for f; do printf "{MARK} %s\\n" "$f"; cat "$f" 2>/dev/null; done'
    out: dict[str, str | None] = dict.fromkeys(paths)
    current = None
    for line in ns.run(["sh", "-c", script, "sh", *paths],
                       what="reading " + " ".join(paths)).splitlines():
        if line.startswith(MARK):
            current = line[len(MARK):].strip()
        elif current is not None:
            out[current] = ((out[current] or "") + line + "\n")
    return {k: (v.strip() if v is not None else None) for k, v in out.items()}


def sysctl_path(name: str) -> str:
    """``net.ipv4.conf.all.rp_filter`` as the file under /proc/sys."""
    return "/proc/sys/" + name.replace(".", "/")


def oneline(text: str) -> str:
    """``ip -o`` output in one line (it marks its line breaks with a backslash)."""
    return " ".join(text.replace("\\", " ").split())


def not_established(cause: Cause, err: KdbgError) -> Cause:
    """``cause`` when a read it needed failed: not established, and why."""
    return replace(cause, established=False, summary=f"cause not established: {err}")
