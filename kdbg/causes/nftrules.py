"""Which nftables rule dropped a packet: the ruleset, read, evaluated against it.

The running kernel cannot say which rule returned NF_DROP without a probe this
host lacks (no kprobes, no fentry), and changing the ruleset to ask (nftrace,
counters) is not allowed. So kdbg reads the namespace's ruleset read-only
(``nft -j list ruleset``, and ``nft -a list ruleset`` for each rule's text) and
evaluates it against the dropped packet's fields at the hook the drop's kernel
stack names, base chains in priority order, first verdict wins.

The drop record carries the packet's mark and its conntrack state, zone and mark
at the drop, so ``meta mark``, ``ct state``, ``ct direction``, ``ct status`` (a flag
test), ``ct zone`` and ``ct mark`` are evaluated too, where they were the same when
the rule ran: a mark unless a rule at
that hook sets it, the conntrack facts in chains after conntrack's own hook
(priority -200 at prerouting and output). An expression kdbg cannot evaluate from
the drop record (a mark under a mask, ``ct status`` as an exact value, an iptables
extension, a limit)
is not guessed: both outcomes are followed. Knowing
the packet *was* dropped, a single rule that drops it on every path is named
("by elimination"); several candidates mean the cause is not established, and
the report says so and why. Pure functions over the JSON, so the evaluator is
tested on checked-in ``nft -j`` output.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kdbg.errors import KdbgError
from kdbg.trace.cause import RuleRef
from kdbg.trace.cttuple import CtTuple
from kdbg.trace.headers import arp_op_number

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
FAMILIES = {"ipv4": ("ip", "inet"), "ipv6": ("ip6", "inet"), "arp": ("arp",)}
MAX_STEPS = 5000


class TooComplex(KdbgError):
    """The ruleset has too many paths to follow for this packet."""


# -- the ruleset ---------------------------------------------------------------

@dataclass
class Rule:
    family: str
    table: str
    chain: str
    handle: int
    expr: list[Any]
    text: str | None = None

    @property
    def ident(self) -> tuple[str, str, str, int]:
        return (self.family, self.table, self.chain, self.handle)

    def fingerprint(self) -> str:
        """The rule without its counters' values: the same rule prints the same."""
        return json.dumps(_strip_counters(self.expr), sort_keys=True)

    def ref(self) -> RuleRef:
        """This rule, as a cause names it."""
        return RuleRef(self.family, self.table, self.chain, self.handle, self.text)


@dataclass
class Chain:
    family: str
    table: str
    name: str
    handle: int
    hook: str | None = None
    prio: int | None = None
    policy: str | None = None
    type: str | None = None
    dev: tuple[str, ...] = ()
    rules: list[Rule] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.family, self.table, self.name)


@dataclass
class Ruleset:
    chains: dict[tuple[str, str, str], Chain]
    sets: dict[tuple[str, str, str], list[Any]]
    # A set whose elements change with no transaction (filled from the packet path, or
    # timing out): the ruleset's generation does not say it is unchanged.
    volatile: bool = False

    @classmethod
    def from_json(cls, doc: dict[str, Any], text: str | None = None) -> Ruleset:
        """Parse ``nft -j list ruleset``; ``text`` (``nft -a list ruleset``) names rules."""
        texts = rule_texts(text) if text is not None else {}
        chains: dict[tuple[str, str, str], Chain] = {}
        sets: dict[tuple[str, str, str], list[Any]] = {}
        volatile = False
        for item in doc.get("nftables", []):
            if "chain" in item:
                c = item["chain"]
                dev = c.get("dev", ())
                chains[(c["family"], c["table"], c["name"])] = Chain(
                    c["family"], c["table"], c["name"], c.get("handle", 0), c.get("hook"),
                    c.get("prio"), c.get("policy"), c.get("type"),
                    (dev,) if isinstance(dev, str) else tuple(dev))
            elif "rule" in item:
                r = item["rule"]
                key = (r["family"], r["table"], r["chain"])
                rule = Rule(*key, r.get("handle", 0), r.get("expr", []))
                rule.text = texts.get(rule.ident)
                volatile = volatile or _updates_a_set(rule.expr)
                if key in chains:
                    chains[key].rules.append(rule)
            elif "set" in item or "map" in item:
                s = item.get("set") or item.get("map")
                sets[(s["family"], s["table"], s["name"])] = list(s.get("elem", []))
                flags = s.get("flags", [])
                flags = [flags] if isinstance(flags, str) else flags
                volatile = volatile or bool({"dynamic", "timeout"} & set(flags)) or (
                    "timeout" in s)
        return cls(chains, sets, volatile)

    def rule(self, ident: tuple[str, str, str, int]) -> Rule | None:
        chain = self.chains.get((ident[0], ident[1], ident[2]))
        if chain is None:
            return None
        return next((r for r in chain.rules if r.handle == ident[3]), None)

    def handles(self) -> set[tuple[str, str, str, int]]:
        return {r.ident for c in self.chains.values() for r in c.rules}


def _updates_a_set(obj: Any) -> bool:
    """Whether a rule's statements fill a set from the packet path (``add @s {...}``,
    ``update @s``, a meter)."""
    if isinstance(obj, dict):
        if "meter" in obj or ("set" in obj and isinstance(obj["set"], dict)
                              and "op" in obj["set"]):
            return True
        return any(_updates_a_set(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_updates_a_set(v) for v in obj)
    return False


def _strip_counters(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: ({} if k == "counter" else _strip_counters(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_counters(v) for v in obj]
    return obj


_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_CHAIN = re.compile(r"^chain (\S+) \{")
_BLOCK = re.compile(r"^(set|map|flowtable|counter|quota|ct \S+|limit|synproxy|secmark) \S+ \{")
_HANDLE = re.compile(r"\s*# handle (\d+)$")


def rule_texts(text: str) -> dict[tuple[str, str, str, int], str]:
    """Each rule's line of ``nft -a list ruleset``, keyed by family, table, chain, handle."""
    out: dict[tuple[str, str, str, int], str] = {}
    family = table = chain = None
    depth = 0
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if depth == 0:
            m = _TABLE.match(line)
            if m:
                family, table, depth = m.group(1), m.group(2).strip('"'), 1
            continue
        if depth == 1:
            m = _CHAIN.match(line)
            if m:
                chain, depth, pending = m.group(1).strip('"'), 2, ""
            elif _BLOCK.match(line) and not line.endswith("}"):
                chain, depth = None, 2
            elif line.startswith("}"):
                depth = 0
            continue
        if line == "}" and not pending:
            depth -= 1
            continue
        if chain is None:
            continue
        pending = f"{pending} {line}".strip() if pending else line
        m = _HANDLE.search(pending)
        if m and family and table:
            out[(family, table, chain, int(m.group(1)))] = pending
            pending = ""
        elif pending.startswith(("type ", "policy ", "comment ")) or pending.endswith(";"):
            pending = ""  # a chain's own attributes
    return out


# -- the packet ----------------------------------------------------------------

@dataclass(frozen=True)
class Packet:
    """What a drop record tells about the packet; None: not known."""

    family: str  # ipv4 | ipv6 | arp (saddr, daddr: the sender's and target's address)
    l4proto: int | None
    saddr: IPAddress | None
    daddr: IPAddress | None
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    iifname: str | None = None
    oifname: str | None = None
    mark: int | None = None  # skb->mark at the drop
    ct_state: str | None = None  # new | established | related | untracked | invalid
    ct_zone: int | None = None  # the conntrack entry's zone id and mark
    ct_mark: int | None = None
    ct_reply: bool | None = None  # the packet is in its entry's reply direction
    ct_status: int | None = None  # its entry's status bits (enum ip_conntrack_status)
    ct_original: CtTuple | None = None  # its entry's original-direction tuple
    ct_reply_tuple: CtTuple | None = None  # and its reply-direction tuple
    arp_op: int | None = None  # an ARP packet's operation (1 request, 2 reply)


class _Unknown(Exception):
    """This expression cannot be evaluated from the drop record."""


class _Absent(Exception):
    """The header this expression reads is not in the packet: it does not match."""


PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58,
                 "sctp": 132, "udplite": 136, "dccp": 33, "gre": 47, "esp": 50, "ah": 51}
ICMP_TYPES = {
    "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10,
    "time-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
    "timestamp-reply": 14, "info-request": 15, "info-reply": 16,
    "address-mask-request": 17, "address-mask-reply": 18,
}
ICMPV6_TYPES = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
    "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
    "mld-listener-query": 130, "mld-listener-report": 131, "mld-listener-done": 132,
    "nd-router-solicit": 133, "nd-router-advert": 134, "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136, "nd-redirect": 137, "mld2-listener-report": 143,
}
PORT_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "dccp": 33}


def _proto_number(v: Any) -> int:
    if isinstance(v, int):
        return v
    if v in PROTO_NUMBERS:
        return PROTO_NUMBERS[v]
    try:
        return socket.getprotobyname(str(v))
    except OSError:
        raise _Unknown(f"protocol {v!r}") from None


def _port(v: Any) -> int:
    if isinstance(v, int):
        return v
    try:
        return socket.getservbyname(str(v))
    except OSError:
        raise _Unknown(f"service {v!r}") from None


class _Field:
    """A value of the packet and how to read the rule's constants for it."""

    def __init__(self, value: Any, conv: Any, wildcard: bool = False) -> None:
        self.value, self.conv, self.wildcard = value, conv, wildcard


def _known(value: Any, what: str, conv: Any) -> _Field:
    """``value`` read through ``conv``; _Unknown (named ``what``) when the record lacks it."""
    if value is None:
        raise _Unknown(what)
    return _Field(value, conv)


def _addr_conv(v: Any) -> Any:
    return ipaddress.ip_address(v)


def _field(left: Any, pkt: Packet) -> _Field:
    """The packet's value for ``left``: _Unknown, or _Absent when the header is missing."""
    if not isinstance(left, dict):
        raise _Unknown("expression")
    if "payload" in left:
        p = left["payload"]
        proto, name = p.get("protocol"), p.get("field")
        if proto is None:
            raise _Unknown("raw payload")
        if proto == "arp":
            return _arp(name, pkt)
        if proto in ("ip", "ip6"):
            if pkt.family != ("ipv4" if proto == "ip" else "ipv6"):
                raise _Absent(proto)
            if name in ("saddr", "daddr"):
                addr = pkt.saddr if name == "saddr" else pkt.daddr
                return _known(addr, f"{proto} {name}", _addr_conv)
            if name in ("protocol", "nexthdr"):
                return _known(pkt.l4proto, f"{proto} {name}", _proto_number)
            raise _Unknown(f"{proto} {name}")
        if proto in PORT_PROTOS or proto == "th":
            if pkt.l4proto is None:
                raise _Unknown(f"{proto} {name}")
            wanted = PORT_PROTOS.values() if proto == "th" else (PORT_PROTOS[proto],)
            if pkt.l4proto not in wanted:
                raise _Absent(proto)
            if name in ("sport", "dport"):
                val = pkt.sport if name == "sport" else pkt.dport
                return _known(val, f"{proto} {name}", _port)
            raise _Unknown(f"{proto} {name}")
        if proto in ("icmp", "icmpv6"):
            num = 1 if proto == "icmp" else 58
            if pkt.l4proto is None:
                raise _Unknown(f"{proto} {name}")
            if pkt.l4proto != num:
                raise _Absent(proto)
            names = ICMP_TYPES if proto == "icmp" else ICMPV6_TYPES
            if name == "type" and pkt.icmp_type is not None:
                return _Field(pkt.icmp_type, lambda v: v if isinstance(v, int) else names[v])
            if name == "code" and pkt.icmp_code is not None:
                return _Field(pkt.icmp_code, lambda v: v if isinstance(v, int) else _no(v))
            raise _Unknown(f"{proto} {name}")
        raise _Unknown(f"{proto} {name}")
    if "meta" in left:
        key = left["meta"].get("key")
        if key == "l4proto":
            return _known(pkt.l4proto, "meta l4proto", _proto_number)
        if key == "nfproto":
            return _Field(pkt.family, str)
        if key == "protocol":
            return _Field({"ipv4": "ip", "ipv6": "ip6"}.get(pkt.family, pkt.family), str)
        if key in ("iifname", "oifname", "iif", "oif"):
            dev = pkt.iifname if key.startswith("i") else pkt.oifname
            if dev is None:
                raise _Unknown(f"meta {key}")
            return _Field(dev, str, wildcard=key.endswith("name"))
        if key == "mark":
            return _known(pkt.mark, "meta mark", _int)
        raise _Unknown(f"meta {key}")
    if "ct" in left and isinstance(left["ct"], dict) and left["ct"].get("dir") in (
            "original", "reply"):
        return _ct_tuple(left["ct"]["dir"], left["ct"].get("key"), pkt)
    if "ct" in left and isinstance(left["ct"], dict) and "dir" not in left["ct"]:
        key = left["ct"].get("key")
        if key == "protocol":  # the original tuple's (NFT_CT_PROTOCOL)
            return _ct_tuple("original", key, pkt)
        if key == "state":
            return _known(pkt.ct_state, "ct state", str)
        if key == "zone":
            return _known(pkt.ct_zone, "ct zone", _int)
        if key == "mark":
            return _known(pkt.ct_mark, "ct mark", _int)
        if key == "direction":
            # nft_ct_get_eval: a packet without an entry breaks the rule (no match)
            if pkt.ct_state in ("invalid", "untracked"):
                raise _Absent("ct")
            if pkt.ct_reply is None:
                raise _Unknown("ct direction")
            return _Field("reply" if pkt.ct_reply else "original", str)
    raise _Unknown(describe_left(left))


# The constants of an ARP header for IPv4 over Ethernet, the only kind the drop program
# reads the addresses of (bpf/kfree_skb.bpf.c): a packet it parsed has these.
ARP_CONSTANTS = {"htype": 1, "ptype": 0x0800, "hlen": 6, "plen": 4}


def _arp(name: Any, pkt: Packet) -> _Field:
    """An ``arp`` payload field (nft's arp_hdr_fields, plus its ``saddr ip``/``daddr
    ip`` of an Ethernet/IPv4 header)."""
    if pkt.family != "arp":
        raise _Absent("arp")
    if name == "operation":
        return _known(pkt.arp_op, "arp operation", arp_op_number)
    if name in ("saddr ip", "daddr ip"):
        addr = pkt.saddr if name == "saddr ip" else pkt.daddr
        return _known(addr, f"arp {name}", _addr_conv)
    if name in ARP_CONSTANTS:
        names = {"ip": 0x0800} if name == "ptype" else {"ether": 1} if name == "htype" else {}
        return _Field(ARP_CONSTANTS[name],
                      lambda v: v if isinstance(v, int) else names.get(v) or _no(v))
    raise _Unknown(f"arp {name}")


def _ct_tuple(direction: str, key: Any, pkt: Packet) -> _Field:
    """``ct original KEY``, ``ct reply KEY`` (and ``ct protocol``) from the entry's
    tuple of that direction, as nft_ct_get_eval reads it: no entry, or an address of
    the other family, breaks the rule (no match)."""
    what = f"ct {direction} {key}"
    if pkt.ct_state in ("invalid", "untracked"):
        raise _Absent("ct")
    tup = pkt.ct_original if direction == "original" else pkt.ct_reply_tuple
    if tup is None:
        raise _Unknown(what)
    if key in ("ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr"):
        if tup.family != ("ipv4" if key.startswith("ip ") else "ipv6"):
            raise _Absent("ct")
        return _Field(tup.saddr if key.endswith("saddr") else tup.daddr, _addr_conv)
    if key in ("proto-src", "proto-dst") and tup.sport is not None:
        return _Field(tup.sport if key == "proto-src" else tup.dport, _port)
    if key == "protocol":
        return _Field(tup.l4proto, _proto_number)
    raise _Unknown(what)


def _int(v: Any) -> int:
    return v if isinstance(v, int) else int(str(v), 0)


def _no(v: Any) -> Any:
    raise _Unknown(f"value {v!r}")


def _elements(right: Any, sets: dict[tuple[str, str, str], list[Any]],
              where: tuple[str, str]) -> list[Any]:
    if isinstance(right, str) and right.startswith("@"):
        key = (*where, right[1:])
        if key not in sets:
            raise _Unknown(f"set {right}")
        return sets[key]
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    if isinstance(right, list):
        return right
    return [right]


def _element_matches(f: _Field, elem: Any) -> bool:
    if isinstance(elem, dict) and "elem" in elem:
        elem = elem["elem"].get("val")
    if isinstance(elem, dict):
        if "prefix" in elem:
            net = ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}",
                                       strict=False)
            return isinstance(f.value, ipaddress.IPv4Address | ipaddress.IPv6Address) \
                and f.value.version == net.version and f.value in net
        if "range" in elem:
            lo, hi = (f.conv(v) for v in elem["range"])
            try:
                return bool(lo <= f.value <= hi)
            except TypeError:
                return False
        raise _Unknown("element")
    if f.wildcard and isinstance(elem, str) and elem.endswith("*") and not elem.endswith("\\*"):
        return str(f.value).startswith(elem[:-1])
    try:
        return bool(f.conv(elem) == f.value)
    except (KeyError, ValueError, TypeError):
        raise _Unknown(f"value {elem!r}") from None


# nftables' names of the conntrack status bits (its ct_status symbol table) and their
# values in the kernel's uapi enum ip_conntrack_status
# (include/uapi/linux/netfilter/nf_conntrack_common.h).
CT_STATUS_BITS = {"expected": 1 << 0, "seen-reply": 1 << 1, "assured": 1 << 2,
                  "confirmed": 1 << 3, "snat": 1 << 4, "dnat": 1 << 5, "dying": 1 << 9}


def _ct_status(expr: dict[str, Any], pkt: Packet) -> bool | None:
    """``ct status FLAG`` (nft's ``in``: any of the flags set) against the entry's status;
    None for any other form (an exact value, a set) and when the status is unknown."""
    right = expr.get("right")
    flags: list[str] = [f for f in (right if isinstance(right, list) else [right])
                        if isinstance(f, str) and f in CT_STATUS_BITS]
    if expr.get("op") != "in" or not flags or len(flags) != (
            len(right) if isinstance(right, list) else 1):
        return None
    if pkt.ct_state in ("invalid", "untracked"):
        return False  # no entry: nft_ct_get_eval breaks the rule
    if pkt.ct_status is None:
        return None
    mask = 0
    for f in flags:
        mask |= CT_STATUS_BITS[f]
    return bool(pkt.ct_status & mask)


def match(expr: dict[str, Any], pkt: Packet, sets: dict[tuple[str, str, str], list[Any]],
          where: tuple[str, str]) -> bool | None:
    """One ``match`` expression against ``pkt``: True, False, or None (cannot tell)."""
    op = expr.get("op", "==")
    left = expr.get("left")
    if isinstance(left, dict) and left.get("ct") == {"key": "status"}:
        return _ct_status(expr, pkt)
    try:
        f = _field(expr.get("left"), pkt)
    except _Absent:
        return False
    except _Unknown:
        return None
    try:
        elems = _elements(expr.get("right"), sets, where)
        if op in ("==", "in", "!="):
            hit = any(_element_matches(f, e) for e in elems)
            return (not hit) if op == "!=" else hit
        if op in ("<", ">", "<=", ">=") and len(elems) == 1:
            v = f.conv(elems[0])
            return {"<": f.value < v, ">": f.value > v, "<=": f.value <= v,
                    ">=": f.value >= v}[op]
    except (_Unknown, KeyError, ValueError, TypeError):
        return None
    return None


def describe_left(left: Any) -> str:
    if isinstance(left, dict):
        if "payload" in left:
            p = left["payload"]
            if "protocol" in p:
                return f"{p['protocol']} {p.get('field')}"
            return f"@{p.get('base')},{p.get('offset')},{p.get('len')}"
        for key in ("meta", "ct", "rt", "socket", "osf", "fib", "exthdr", "tcp option",
                    "numgen", "jhash", "symhash"):
            if key in left:
                inner = left[key]
                sub = inner.get("key") or inner.get("name") or "" if isinstance(inner, dict) else ""
                if isinstance(inner, dict) and inner.get("dir"):  # ct original ip saddr
                    sub = f"{inner['dir']} {sub}"
                return f"{key} {sub}".strip()
        if "&" in left or "|" in left:
            return "a bitwise expression"
        return next(iter(left), "expression")
    return json.dumps(left)


def describe(expr: dict[str, Any]) -> str:
    """A short name for an expression kdbg could not evaluate (``ct state``, ``xt match
    multiport``, ``limit``)."""
    if "match" in expr:
        m = expr["match"]
        right = m.get("right")
        if isinstance(right, list) and all(isinstance(v, str | int) for v in right):
            shown = ",".join(str(v) for v in right)
        elif isinstance(right, str | int):
            shown = str(right)
        else:
            shown = json.dumps(right, separators=(",", ":"))
        return f"{describe_left(m.get('left'))} {m.get('op', '==')} {shown}"
    if "xt" in expr:
        return f"xt {expr['xt'].get('type', '')} {expr['xt'].get('name', '')}".strip()
    return next(iter(expr), "expression")


# -- evaluation ----------------------------------------------------------------

VERDICTS = ("accept", "drop", "reject", "queue", "continue", "return", "jump", "goto")
# Statements that neither match nor decide (a set update with a stateful statement
# inside, like 'update @s { ip saddr limit rate 10/second }', is a match: not here).
NO_EFFECT = ("counter", "log", "mangle", "notrack", "ct helper", "ct timeout", "ct expectation",
             "map", "dup", "fwd", "tproxy", "synproxy", "flow", "secmark", "last")
NAT = ("snat", "dnat", "masquerade", "redirect")


@dataclass(frozen=True)
class Assumption:
    """An expression kdbg could not evaluate, and which way a path took it."""

    rule: tuple[str, str, str, int] | None
    what: str
    matched: bool


@dataclass(frozen=True)
class Outcome:
    """Where one path through the hook ended."""

    verdict: str  # accept | drop | queue | return
    chain: Chain
    rule: Rule | None  # None: the chain's policy
    assumed: tuple[Assumption, ...]


@dataclass(frozen=True)
class _Branch:
    action: str | None  # None: rule did not match or had no verdict; else a verdict
    target: str | None
    rule: Rule
    assumed: tuple[Assumption, ...]


class Evaluator:
    """Follows one packet through a ruleset's base chains at one hook."""

    def __init__(self, ruleset: Ruleset, pkt: Packet) -> None:
        self.rs, self.pkt = ruleset, pkt
        self.steps = 0

    def _tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TooComplex("too many paths through the ruleset for this packet")

    def _rule(self, rule: Rule, assumed: tuple[Assumption, ...]) -> list[_Branch]:
        where = (rule.family, rule.table)
        branches: list[_Branch] = []
        live = [assumed]
        for expr in rule.expr:
            if not isinstance(expr, dict) or not expr:
                continue
            key = next(iter(expr))
            result: bool | None
            if key == "match":
                result = match(expr["match"], self.pkt, self.rs.sets, where)
            elif key == "xt":  # an iptables extension: a target does not match
                result = True if expr["xt"].get("type") == "target" else None
            elif key == "set" and isinstance(expr["set"], dict) and "stmt" not in expr["set"]:
                result = True  # adds to a set; decides nothing
            elif key not in (*VERDICTS, *NO_EFFECT, *NAT, "vmap"):
                result = None  # limit, quota, meter, ct count, …: may or may not match
            else:
                result = True
            if key in VERDICTS or key in NAT:
                verdict = {"reject": "drop"}.get(key, key)
                if key in NAT:
                    verdict = "accept"
                target = expr[key].get("target") if isinstance(expr[key], dict) else None
                branches += [_Branch(verdict, target, rule, a) for a in live]
                return branches
            if key == "vmap":
                return branches + self._vmap(rule, expr["vmap"], live)
            if result is False:
                return branches + [_Branch(None, None, rule, a) for a in live]
            if result is None:
                what = describe(expr)
                branches += [_Branch(None, None, rule, (*a, Assumption(rule.ident, what, False)))
                             for a in live]
                live = [(*a, Assumption(rule.ident, what, True)) for a in live]
        return branches + [_Branch(None, None, rule, a) for a in live]

    def _vmap(self, rule: Rule, vmap: dict[str, Any],
              live: list[tuple[Assumption, ...]]) -> list[_Branch]:
        fake = {"left": vmap.get("key"), "right": None, "op": "=="}
        data = vmap.get("data")
        pairs = _elements(data, self.rs.sets, (rule.family, rule.table))
        out: list[_Branch] = []
        try:
            f = _field(fake["left"], self.pkt)
        except _Absent:
            return [_Branch(None, None, rule, a) for a in live]
        except _Unknown:
            f = None
        for pair in pairs:
            if isinstance(pair, dict) and "elem" in pair:
                pair = pair["elem"]
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], dict)):
                continue
            key, verdict = pair
            vname = next(iter(verdict))
            target = verdict[vname].get("target") if isinstance(verdict[vname], dict) else None
            vname = {"reject": "drop"}.get(vname, vname)
            if f is None:
                what = f"{describe_left(vmap.get('key'))} vmap {key}"
                out += [_Branch(vname, target, rule, (*a, Assumption(rule.ident, what, True)))
                        for a in live]
                continue
            try:
                if _element_matches(f, key):
                    return out + [_Branch(vname, target, rule, a) for a in live]
            except _Unknown:
                what = f"{describe_left(vmap.get('key'))} vmap {key}"
                out += [_Branch(vname, target, rule, (*a, Assumption(rule.ident, what, True)))
                        for a in live]
        what = f"{describe_left(vmap.get('key'))} vmap: no element"
        tail = (Assumption(rule.ident, what, False),) if out else ()
        return out + [_Branch(None, None, rule, (*a, *tail)) for a in live]

    def run(self, chain: Chain, start: int, assumed: tuple[Assumption, ...],
            depth: int = 0) -> Iterator[Outcome]:
        """Every way ``chain`` can end, from rule ``start``, for this packet."""
        if depth > 16:
            raise TooComplex("jumps nest deeper than 16 chains")
        idx = start
        while idx < len(chain.rules):
            self._tick()
            rule = chain.rules[idx]
            go_on: tuple[Assumption, ...] | None = None
            for br in self._rule(rule, assumed):
                if br.action in (None, "continue"):
                    if go_on is None:
                        go_on = br.assumed
                    else:
                        yield from self.run(chain, idx + 1, br.assumed, depth)
                elif br.action in ("jump", "goto"):
                    target = self.rs.chains.get((chain.family, chain.table, br.target or ""))
                    if target is None:
                        continue
                    for sub in self.run(target, 0, br.assumed, depth + 1):
                        if sub.verdict == "return" and br.action == "jump":
                            yield from self.run(chain, idx + 1, sub.assumed, depth)
                        else:
                            yield sub
                elif br.action == "return":
                    yield Outcome("return", chain, rule, br.assumed)
                else:
                    yield Outcome(br.action, chain, rule, br.assumed)
            if go_on is None:
                return
            assumed = go_on
            idx += 1
        yield Outcome("return", chain, None, assumed)


def base_chains(rs: Ruleset, hook: str, families: tuple[str, ...],
                ifname: str | None = None) -> list[Chain]:
    """The base chains the packet passes at ``hook``, in the order the kernel runs them."""
    out = [c for c in rs.chains.values()
           if c.hook == hook and c.family in families
           and (not c.dev or ifname is None or ifname in c.dev)]
    return sorted(out, key=lambda c: (c.prio if c.prio is not None else 0))


# nf_conntrack_in's priority at prerouting and output (NF_IP_PRI_CONNTRACK): a chain
# at or before it sees the packet without the conntrack entry the drop record shows
CONNTRACK_PRIO = -200


def _reachable(rs: Ruleset, chains: list[Chain]) -> list[Chain]:
    """``chains`` and every chain a jump, goto or verdict map in them can reach."""
    seen: dict[tuple[str, str, str], Chain] = {}
    todo = list(chains)
    while todo:
        chain = todo.pop()
        if chain.key in seen:
            continue
        seen[chain.key] = chain
        for rule in chain.rules:
            for target in _targets(rule.expr):
                nxt = rs.chains.get((chain.family, chain.table, target))
                if nxt is not None:
                    todo.append(nxt)
    return list(seen.values())


def _targets(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for key, val in obj.items():
            if key in ("jump", "goto") and isinstance(val, dict) and "target" in val:
                yield str(val["target"])
            else:
                yield from _targets(val)
    elif isinstance(obj, list):
        for item in obj:
            yield from _targets(item)


def _sets(obj: Any, what: dict[str, Any]) -> bool:
    """Whether a rule's expressions set ``what`` (``meta mark set …`` is a mangle of
    ``{"meta": {"key": "mark"}}``)."""
    if isinstance(obj, dict):
        m = obj.get("mangle")
        if isinstance(m, dict) and m.get("key") == what:
            return True
        return any(_sets(v, what) for v in obj.values())
    if isinstance(obj, list):
        return any(_sets(v, what) for v in obj)
    return False


def as_seen_by(pkt: Packet, chains: list[Chain], rs: Ruleset) -> Packet:
    """``pkt`` with only what held when this hook's rules ran: its mark and its conntrack
    entry's mark unless a rule reachable at this hook sets them (then the drop's may be
    a later one). Its conntrack state and zone hold only in chains after conntrack's
    (:func:`ct_known`)."""
    rules = [r for c in _reachable(rs, chains) for r in c.rules]
    if pkt.mark is not None and any(_sets(r.expr, {"meta": {"key": "mark"}}) for r in rules):
        pkt = dataclasses.replace(pkt, mark=None)
    if pkt.ct_mark is not None and any(_sets(r.expr, {"ct": {"key": "mark"}}) for r in rules):
        pkt = dataclasses.replace(pkt, ct_mark=None)
    return pkt


# br_netfilter's priority at the bridge's prerouting (NF_BR_PRI_BRNF), where it runs
# IPv4/IPv6 prerouting (conntrack and destination NAT included) for a bridged packet;
# nf_conntrack_bridge's own hook runs before it.
BRNF_PRIO = 0


def ct_known(hook: str, chain: Chain) -> bool:
    """Whether a base chain runs after conntrack has given the packet its state."""
    if chain.family == "bridge":  # the bridge's output runs after IP's own output
        return hook != "prerouting" or (chain.prio is not None and chain.prio > BRNF_PRIO)
    if hook not in ("prerouting", "output"):
        return True  # input, forward, postrouting: after prerouting's or output's conntrack
    return chain.prio is not None and chain.prio > CONNTRACK_PRIO


# The destination NAT chains' priority at prerouting and output (NF_IP_PRI_NAT_DST): a
# connection's first packet gets its DNAT bits there.
NAT_DST_PRIO = -100


def nat_known(hook: str, chain: Chain) -> bool:
    """Whether a base chain runs after destination NAT has set the entry's status bits
    (a connection's first packet: before it, ``ct status dnat`` was not yet true)."""
    if chain.family == "bridge":
        return ct_known(hook, chain)
    if hook not in ("prerouting", "output"):
        return True
    return chain.prio is not None and chain.prio > NAT_DST_PRIO


def drops_at_hook(rs: Ruleset, pkt: Packet, hook: str, families: tuple[str, ...]
                  ) -> list[Outcome]:
    """Every path on which the hook drops ``pkt``."""
    chains = base_chains(rs, hook, families, pkt.iifname or pkt.oifname)
    seen = as_seen_by(pkt, chains, rs)
    ev = Evaluator(rs, seen)
    paths: list[tuple[Assumption, ...]] = [()]
    drops: list[Outcome] = []
    for chain in chains:
        ev.pkt = seen if ct_known(hook, chain) else dataclasses.replace(
            seen, ct_state=None, ct_zone=None, ct_mark=None, ct_reply=None, ct_status=None,
            ct_original=None, ct_reply_tuple=None)
        if not nat_known(hook, chain):  # NAT sets status bits and rewrites the reply tuple
            ev.pkt = dataclasses.replace(ev.pkt, ct_status=None, ct_reply_tuple=None)
        nxt: list[tuple[Assumption, ...]] = []
        for assumed in paths:
            if chain.type == "nat":
                # A nat chain sees only a connection's first packet.
                nxt.append((*assumed, Assumption(None, f"nat chain {chain.name} not run "
                                                 "(not a connection's first packet)", True)))
                assumed = (*assumed, Assumption(None, f"nat chain {chain.name} run", True))
            for out in ev.run(chain, 0, assumed):
                if out.verdict == "return":
                    if chain.policy == "drop":
                        drops.append(Outcome("drop", chain, None, out.assumed))
                    else:
                        nxt.append(out.assumed)
                elif out.verdict == "accept":
                    nxt.append(out.assumed)
                elif out.verdict == "drop":
                    drops.append(out)
                # queue: the packet left nftables' hands on that path; not a drop here
        paths = nxt
        if len(paths) > MAX_STEPS:
            raise TooComplex("too many paths through the ruleset for this packet")
    return drops


@dataclass(frozen=True)
class Finding:
    """What the ruleset says about one dropped packet."""

    established: bool
    rule: RuleRef | None  # the rule, or the chain whose policy dropped it
    text: str  # one line for the report
    candidates: tuple[RuleRef, ...] = ()
    unknown: tuple[str, ...] = ()  # expressions kdbg could not evaluate
    fingerprint: str | None = None  # the deciding rule's, to notice later changes
    none_drops: bool = False  # no rule or policy drops it at those hooks: not nftables


def _decider(o: Outcome) -> RuleRef:
    c = o.chain
    if o.rule is None:
        return RuleRef(c.family, c.table, c.name, policy="drop")
    return o.rule.ref()


def find_rule(rs: Ruleset, pkt: Packet, hooks: tuple[str, ...], families: tuple[str, ...]
              ) -> Finding:
    """Name the rule (or chain policy) that dropped ``pkt`` at one of ``hooks``."""
    try:
        outcomes = [o for hook in hooks for o in drops_at_hook(rs, pkt, hook, families)]
    except TooComplex as err:
        return Finding(False, None, f"cause not established: {err}")
    deciders: dict[RuleRef, Outcome] = {}
    for o in outcomes:
        deciders.setdefault(_decider(o), o)
    unknown = tuple(sorted({a.what for o in outcomes for a in o.assumed}))
    where = "/".join(hooks)
    if not deciders:
        return Finding(False, None,
                       f"cause not established: no rule or policy in the current ruleset "
                       f"drops this packet at the {where} hook (the ruleset may have changed "
                       "since the drop, or a hook other than nftables dropped it)",
                       none_drops=True)
    if len(deciders) == 1:
        d, o = next(iter(deciders.items()))
        text = d.label
        if unknown:
            text += ("; by elimination: the only rule that can drop this packet, whatever "
                     f"kdbg could not evaluate ({', '.join(unknown)})")
        return Finding(True, d, text, unknown=unknown,
                       fingerprint=o.rule.fingerprint() if o.rule else None)
    cands = tuple(deciders)
    return Finding(False, None,
                   f"cause not established: {len(cands)} rules could have dropped it, "
                   f"depending on what kdbg cannot evaluate from the drop "
                   f"({', '.join(unknown) or 'chain order'}): "
                   + "; ".join(d.label for d in cands),
                   candidates=cands, unknown=unknown)


def read(ns: Any, attempts: int = 3) -> Ruleset:
    """The ruleset of namespace ``ns`` (a :class:`kdbg.causes.netnsref.NetnsRef`), read-only:
    ``nft -j list ruleset``, and ``nft -a -s list ruleset`` for each rule's text (``-s``
    leaves out counter values, so a rule reads the same at every drop); read again if
    the two disagree."""
    for _ in range(attempts):
        doc = json.loads(ns.run(["nft", "-j", "list", "ruleset"]) or '{"nftables": []}')
        text = ns.run(["nft", "-a", "-s", "list", "ruleset"])
        rs = Ruleset.from_json(doc, text)
        if rs.handles() == set(rule_texts(text)):
            return rs
    raise KdbgError(f"the ruleset of netns {ns.label} kept changing while kdbg read it")
