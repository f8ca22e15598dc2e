"""Why a drop happened, typed: the cause a :class:`kdbg.trace.event.DropEvent` carries.

:mod:`kdbg.causes` finds it (the rule, the missing socket, the setting that decided);
``kdbg watch`` prints it on each drop, ``kdbg diagnose`` groups by it, and a
``--break`` hit report names it. Its JSON is the ``"cause"`` record of docs/diagnose.md,
key for key and in the same order, so JSON lines written before read back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

# A setting and its value as read (a sysctl's text), or a number kdbg worked out from
# them (the effective rp_filter), or a route; in the order they were read.
Facts = tuple[tuple[str, str | int | None], ...]


@dataclass(frozen=True)
class RuleRef:
    """The nftables rule that dropped a packet, or the base chain whose policy did."""

    family: str
    table: str
    chain: str
    handle: int | None = None  # None for a policy
    text: str | None = None  # the rule as ``nft -a -s list ruleset`` prints it
    policy: str | None = None  # "drop" when the chain's policy decided

    @property
    def ident(self) -> tuple[str, str, str, int | None]:
        """The rule's place in the ruleset, whatever its text."""
        return (self.family, self.table, self.chain, self.handle)

    @property
    def place(self) -> str:
        """``table ip filter chain INPUT rule handle 2`` (``... policy`` for a policy)."""
        return self.chain_place + (" policy" if self.policy is not None
                                   else f" rule handle {self.handle}")

    @property
    def chain_place(self) -> str:
        """``table ip filter chain INPUT``."""
        return f"table {self.family} {self.table} chain {self.chain}"

    @property
    def label(self) -> str:
        """The rule as a drop's cause names it: its place and its text."""
        if self.policy is not None:
            return (f"the policy of {self.chain_place} (policy drop: no rule accepted the "
                    "packet)")
        return f"{self.place}: {self.text or '(text unavailable)'}"

    def to_json(self) -> dict[str, Any]:
        """``{"family", "table", "chain", "handle", "text"}``, or ``"policy"`` in place of
        the last two."""
        rec: dict[str, Any] = {"family": self.family, "table": self.table, "chain": self.chain}
        if self.policy is not None:
            rec["policy"] = self.policy
        else:
            rec["handle"] = self.handle
            rec["text"] = self.text
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> RuleRef:
        """The rule of a ``"rule"`` (or ``"candidates"``) record."""
        return cls(rec["family"], rec["table"], rec["chain"], rec.get("handle"),
                   rec.get("text"), rec.get("policy"))


@dataclass(frozen=True)
class SocketRef:
    """What a packet was addressed to when no socket took it (NO_SOCKET)."""

    proto: str
    family: str | None
    address: str
    port: int
    netns: int | None

    def to_json(self) -> dict[str, Any]:
        """The ``"socket"`` record."""
        return {"proto": self.proto, "family": self.family, "address": self.address,
                "port": self.port, "netns": self.netns}

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> SocketRef:
        """The socket of a ``"socket"`` record."""
        return cls(rec["proto"], rec.get("family"), rec["address"], rec["port"],
                   rec.get("netns"))


@dataclass(frozen=True)
class Listener:
    """A socket that takes packets on the drop's port, as its namespace's socket table
    showed it after the drop."""

    proto: str
    family: str
    addr: str
    port: int
    endpoint: str  # "udp 127.0.0.1:7777"
    queue: int  # a TCP listener's accept queue; else the bytes waiting to be read
    accepting: bool  # a TCP listener: ``queue`` is its accept queue
    drops: int | None = None  # UDP only: the drops the socket counted

    def to_json(self) -> dict[str, Any]:
        """One of the ``"listeners"`` records."""
        rec: dict[str, Any] = {"proto": self.proto, "family": self.family, "addr": self.addr,
                               "port": self.port, "endpoint": self.endpoint}
        rec["accept_queue" if self.accepting else "rx_queue"] = self.queue
        if self.drops is not None:
            rec["drops"] = self.drops
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> Listener:
        """The socket of a ``"listeners"`` record."""
        accepting = "accept_queue" in rec
        return cls(rec["proto"], rec["family"], rec["addr"], rec["port"], rec["endpoint"],
                   rec["accept_queue" if accepting else "rx_queue"], accepting, rec.get("drops"))


@dataclass(frozen=True)
class HookFn:
    """One hook function registered at a hook, as the kernel runs it."""

    priority: int
    function: str  # its symbol, or its address in hex when kallsyms cannot name it
    module: str | None = None  # None: built into the kernel
    table: str | None = None  # an x_tables table's name ("filter"), or an nftables
    # chain as ``family table chain`` when kdbg could match it
    kind: str | None = None  # "nftables", "iptables", ..., None for any other

    @property
    def text(self) -> str:
        """``ipt_do_table [x_tables] (iptables filter)``: the function, its module and
        what it runs."""
        out = self.function + (f" [{self.module}]" if self.module else "")
        what = " ".join(p for p in (self.kind, self.table) if p)
        return out + (f" ({what})" if what else "")

    @property
    def label(self) -> str:
        """``ipt_do_table (iptables filter, priority 0)``, as a cause names it."""
        what = ", ".join(p for p in (" ".join(q for q in (self.kind, self.table) if q),
                                     f"priority {self.priority}") if p)
        return f"{self.function}" + (f" [{self.module}]" if self.module else "") + f" ({what})"

    def to_json(self) -> dict[str, Any]:
        """One of the ``"functions"`` of a ``"hooks"`` record, or ``"dropped_by"``."""
        rec: dict[str, Any] = {"priority": self.priority, "function": self.function,
                               "module": self.module}
        if self.kind is not None:
            rec["kind"] = self.kind
        if self.table is not None:
            rec["table"] = self.table
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> HookFn:
        """The function of a ``"dropped_by"`` record, or of a ``"hooks"`` one's list."""
        return cls(rec["priority"], rec["function"], rec.get("module"), rec.get("table"),
                   rec.get("kind"))


@dataclass(frozen=True)
class HookList:
    """The hook functions at one hook of one namespace and family, in order, and where
    kdbg read them (``nft list hooks`` or ``kernel memory``)."""

    family: str  # ipv4, ipv6, bridge, arp
    hook: str
    functions: tuple[HookFn, ...]
    source: str
    total: int  # entries registered (more than ``functions`` only past 32)

    def to_json(self) -> dict[str, Any]:
        """The ``"hooks"`` record."""
        return {"family": self.family, "hook": self.hook, "source": self.source,
                "total": self.total, "functions": [f.to_json() for f in self.functions]}

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> HookList:
        return cls(rec["family"], rec["hook"],
                   tuple(HookFn.from_json(f) for f in rec["functions"]), rec["source"],
                   rec["total"])


@dataclass(frozen=True)
class Cause:
    """Why one drop happened, and what to do about it (docs/diagnose.md).

    ``established``: True when kdbg established the cause, False when it could not
    (``summary`` says why), None when there was no fact to establish (the reason's
    notes only); ``summary`` is the cause in one line.
    """

    reason: str
    established: bool | None = None
    summary: str | None = None
    # The reason's notes (kdbg.causes.notes), filled with the drop's values.
    meaning: str | None = None
    usual_causes: tuple[str, ...] = ()
    confirm: str | None = None  # run in the drop's namespace
    advice: str | None = None
    # The drop's namespace: its inode, and its name under /var/run/netns.
    netns: int | None = None
    netns_name: str | None = None
    # NETFILTER_DROP: the hook the stack named (None with a ``note`` saying why: every
    # hook was evaluated), then the rule, or the candidates and what kdbg could not
    # evaluate.
    hook: str | None = None
    note: str | None = None
    rule: RuleRef | None = None
    candidates: tuple[RuleRef, ...] = ()
    not_evaluated: tuple[str, ...] = ()
    # What the other finders read: the socket a packet wanted, the settings, the
    # sockets on the port (None: not read; (): read, and there were none).
    socket: SocketRef | None = None
    facts: Facts | None = None
    listeners: tuple[Listener, ...] | None = None
    # NETFILTER_DROP: the hook functions registered at the drop's hook in its namespace
    # and family (None: not read), and the one blamed when not an nftables rule.
    hooks: HookList | None = None
    dropped_by: HookFn | None = None

    @property
    def text(self) -> str | None:
        """The cause in one line, as text output ends a drop's line with it."""
        return self.summary or self.meaning

    @property
    def group(self) -> str:
        """What drops with the same cause share: the rule, or the cause's summary."""
        rule = self.rule
        if rule is not None:
            tail = f"{rule.family} {rule.table} {rule.chain}"
            tail += " policy" if rule.policy is not None else f" handle {rule.handle}"
            return f"{self.reason} {self.netns} {tail}"
        return f"{self.reason} {self.summary}"

    def to_json(self) -> dict[str, Any]:
        """The ``"cause"`` record, keys in the order kdbg has always written them. Built
        once per cause: every drop of one cause key shares it."""
        return self._record

    @cached_property
    def _record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"reason": self.reason, "established": self.established,
                               "meaning": self.meaning, "usual_causes": list(self.usual_causes)}
        if self.netns is not None:
            rec["netns"] = self.netns
        if self.netns_name is not None:
            rec["netns_name"] = self.netns_name
        if self.hook is not None or self.note is not None:
            rec["hook"] = self.hook
        if self.note is not None:
            rec["note"] = self.note
        if self.rule is not None:
            rec["rule"] = self.rule.to_json()
        if self.candidates:
            rec["candidates"] = [r.to_json() for r in self.candidates]
        if self.not_evaluated:
            rec["not_evaluated"] = list(self.not_evaluated)
        if self.socket is not None:
            rec["socket"] = self.socket.to_json()
        if self.facts is not None:
            rec["facts"] = dict(self.facts)
        if self.listeners is not None:
            rec["listeners"] = [s.to_json() for s in self.listeners]
        if self.hooks is not None:
            rec["hooks"] = self.hooks.to_json()
        if self.dropped_by is not None:
            rec["dropped_by"] = self.dropped_by.to_json()
        rec.update({"confirm": self.confirm, "advice": self.advice, "summary": self.summary})
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> Cause:
        """The cause of a ``"cause"`` record (a drop piped from another kdbg, or read back
        from JSON lines)."""
        def opt(key: str, make: Any) -> Any:
            return make(rec[key]) if rec.get(key) is not None else None

        return cls(
            reason=rec["reason"], established=rec.get("established"),
            summary=rec.get("summary"), meaning=rec.get("meaning"),
            usual_causes=tuple(rec.get("usual_causes") or ()),
            netns=rec.get("netns"), netns_name=rec.get("netns_name"),
            hook=rec.get("hook"), note=rec.get("note"),
            rule=opt("rule", RuleRef.from_json),
            candidates=tuple(RuleRef.from_json(r) for r in rec.get("candidates") or ()),
            not_evaluated=tuple(rec.get("not_evaluated") or ()),
            socket=opt("socket", SocketRef.from_json),
            facts=opt("facts", lambda d: tuple(d.items())),
            listeners=opt("listeners", lambda ls: tuple(Listener.from_json(s) for s in ls)),
            hooks=opt("hooks", HookList.from_json),
            dropped_by=opt("dropped_by", HookFn.from_json),
            confirm=rec.get("confirm"), advice=rec.get("advice"),
        )
