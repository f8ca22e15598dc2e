"""The netfilter hooks at a drop: the hook functions registered at one hook of one
namespace and family, in the order the kernel runs them, with their priority and module.

nettrace's ``--hooks`` shows them; ``nft list hooks`` does where the kernel has
nfnetlink_hook (``CONFIG_NETFILTER_NETLINK_HOOK``). Debian's 6.1 and this project's 6.18
host are built without it (the command prints nothing there), so kdbg reads them from
kernel memory: ``bpf/nf_hooks.bpf.c``, a raw tracepoint program that is never attached,
is run on demand (``BPF_PROG_TEST_RUN``) by a thread that entered the namespace, and
copies ``current->nsproxy->net_ns->nf.hooks_<family>[hook]``: the
``struct nf_hook_entries`` (``num_hook_entries``, ``hooks[]`` of ``{hook, priv}``, then
the ``orig_ops`` array whose ``nf_hook_ops.priority`` orders them). Every offset comes
from the running kernel's BTF; functions are named from ``/proc/kallsyms`` with their
module. Nothing is written to the kernel.
"""

from __future__ import annotations

import ctypes as ct
import os
import re
import threading
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from kdbg.causes.netnsref import NetnsRef
from kdbg.dirs import BPF_DIR
from kdbg.errors import BtfError, KdbgError, ProbeUnavailable
from kdbg.symbols.btf import KIND_STRUCT, Btf
from kdbg.symbols.kallsyms import Kallsyms, LiveKallsyms
from kdbg.trace import bpfsys, objcache, offsets
from kdbg.trace.cause import HookFn, HookList
from kdbg.trace.render import render

TEMPLATE = BPF_DIR / "nf_hooks.bpf.c"
FUNC = "kdbg_nf_hooks"
MAX_HOOKS = 32  # KDBG_NF_HOOKS_MAX
NAMESIZ = 32  # KDBG_NF_NAMESIZ
ERR_NET, ERR_ENTRIES = 1, 2  # KDBG_NF_ERR_*
CLONE_NEWNET = 0x40000000

# The array of struct netns_nf that holds each family's hooks (hooks_bridge only with
# CONFIG_NETFILTER_FAMILY_BRIDGE, hooks_arp with CONFIG_NETFILTER_FAMILY_ARP).
FAMILY_ARRAYS = {"ipv4": "net.nf.hooks_ipv4", "ipv6": "net.nf.hooks_ipv6",
                 "arp": "net.nf.hooks_arp", "bridge": "net.nf.hooks_bridge"}
# enum nf_inet_hooks's names (the bridge's NF_BR_* are the same numbers), as kdbg names
# the hooks.
HOOK_ENUM = {"NF_INET_PRE_ROUTING": "prerouting", "NF_INET_LOCAL_IN": "input",
             "NF_INET_FORWARD": "forward", "NF_INET_LOCAL_OUT": "output",
             "NF_INET_POST_ROUTING": "postrouting"}
# x_tables' hook functions, whose priv is the table's struct xt_table (the program copies
# its name): the tables' own ipt_do_table and kin, registered as the hook function itself
# since v5.17 (net/ipv4/netfilter/iptable_filter.c), and the mangle tables' wrappers that
# pass priv on to it (iptable_mangle_hook, ip6table_mangle_hook).
XT_KINDS = {"ipt_do_table": "iptables", "ip6t_do_table": "ip6tables",
            "arpt_do_table": "arptables", "ebt_do_table": "ebtables",
            "iptable_mangle_hook": "iptables", "ip6table_mangle_hook": "ip6tables"}
# nftables' hook functions and the table family each runs.
NFT_FUNCS = {"nft_do_chain_ipv4": "ip", "nft_do_chain_ipv6": "ip6",
             "nft_do_chain_inet": "inet", "nft_do_chain_bridge": "bridge",
             "nft_do_chain_arp": "arp", "nft_do_chain_netdev": "netdev",
             "nft_do_chain_inet_ingress": "inet"}

FIELDS: dict[str, tuple[str, ...]] = {
    "TASK_NSPROXY": ("task_struct.nsproxy",),
    "NSPROXY_NET": ("nsproxy.net_ns",),
    "NET_INUM": ("net.ns.inum",),
    "ENTRIES_NUM": ("nf_hook_entries.num_hook_entries",),
    "ENTRIES_HOOKS": ("nf_hook_entries.hooks",),
    "ENTRY_HOOK": ("nf_hook_entry.hook",),
    "ENTRY_PRIV": ("nf_hook_entry.priv",),
    "OPS_PRIORITY": ("nf_hook_ops.priority",),
}


class RawNfHook(ct.Structure):
    """``struct kdbg_nf_hook``."""

    _fields_ = [
        ("fn", ct.c_uint64),
        ("priv", ct.c_uint64),
        ("ops", ct.c_uint64),
        ("priority", ct.c_int32),
        ("pad0", ct.c_uint32),
        ("table", ct.c_char * NAMESIZ),
    ]


class RawNfHooks(ct.Structure):
    """``struct kdbg_nf_hooks``."""

    _fields_ = [
        ("net", ct.c_uint64),
        ("entries", ct.c_uint64),
        ("inum", ct.c_uint32),
        ("num", ct.c_uint32),
        ("copied", ct.c_uint32),
        ("err", ct.c_int32),
        ("hooks", RawNfHook * MAX_HOOKS),
    ]


def hook_numbers(btf: Btf) -> dict[str, int]:
    """kdbg's hook names to their numbers, from the kernel's ``enum nf_inet_hooks``."""
    values = btf.enum("nf_inet_hooks")
    return {name: values[e] for e, name in HOOK_ENUM.items() if e in values}


def kernel_layout(btf_path: str | Path = offsets.BTF_PATH) -> dict[str, int]:
    """The program's offsets and sizes, each family's array in struct net (``ARR_<family>``,
    -1 when this kernel has none) and the hook numbers (``HOOK_<name>``), cached by BTF."""
    def work(btf: Btf) -> dict[str, int]:
        out = offsets.compute(btf, FIELDS)
        out["ENTRY_SIZE"] = btf.size_of(btf.find(KIND_STRUCT, "nf_hook_entry"))
        try:
            out["XT_TABLE_NAME"] = btf.field("xt_table.name").offset
        except BtfError:  # x_tables as a module: its BTF is its own
            out["XT_TABLE_NAME"] = -1
        for fam, path in FAMILY_ARRAYS.items():
            try:
                f = btf.field(path)
                out[f"ARR_{fam}"], out[f"ARRLEN_{fam}"] = f.offset, f.size // 8
            except BtfError:
                out[f"ARR_{fam}"], out[f"ARRLEN_{fam}"] = -1, 0
        out.update({f"HOOK_{k}": v for k, v in hook_numbers(btf).items()})
        return out
    return offsets.cached("nf-hooks", FIELDS, work, btf_path)


def program_text(layout: dict[str, int]) -> str:
    """``bpf/nf_hooks.bpf.c`` filled for a kernel's ``layout``."""
    keys = (*FIELDS, "ENTRY_SIZE", "XT_TABLE_NAME")
    return render(TEMPLATE.read_text(), {k: layout[k] for k in keys})


# ARP's hooks are numbered apart: NF_ARP_IN, NF_ARP_OUT, NF_ARP_FORWARD (#defines in
# include/uapi/linux/netfilter_arp.h, so not in BTF).
ARP_HOOK_NUMBERS = {"input": 0, "output": 1, "forward": 2}


def slot_offset(layout: dict[str, int], family: str, hook: str) -> int | None:
    """The byte offset in struct net of ``family``'s entries pointer at ``hook`` (None:
    this kernel keeps no such hook)."""
    base, n = layout.get(f"ARR_{family}", -1), layout.get(f"ARRLEN_{family}", 0)
    num = ARP_HOOK_NUMBERS.get(hook) if family == "arp" else layout.get(f"HOOK_{hook}")
    if base < 0 or num is None or num >= n:
        return None
    return base + 8 * num


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ct.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ct.get_errno()
            raise KdbgError(f"cannot enter netns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns: NetnsRef, work: Any) -> Any:
    """``work()`` run by a thread that entered ``ns`` (a network namespace is per thread:
    the thread's change ends with it, the process's own is untouched)."""
    if ns.own:
        return work()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            _setns(ns.path)
            box["value"] = work()
        except BaseException as err:  # handed to the caller
            box["error"] = err
    thread = threading.Thread(target=run, name="kdbg-nf-hooks", daemon=True)
    thread.start()
    thread.join(10.0)
    if thread.is_alive():
        raise KdbgError(f"reading the hooks of netns {ns.label} took over 10 s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class MemoryReader:
    """The program loaded once (not attached), and run per question."""

    def __init__(self, kallsyms: Kallsyms | None = None) -> None:
        self.layout = kernel_layout()
        self._prog = objcache.load(program_text(self.layout), [(f"run:{FUNC}", FUNC)],
                                   "netfilter hook reader")
        self._ksyms = kallsyms
        self._lock = threading.Lock()

    @property
    def kallsyms(self) -> Kallsyms:
        if self._ksyms is None:
            self._ksyms = LiveKallsyms()
        return self._ksyms

    def close(self) -> None:
        self._prog.close()

    def raw(self, ns: NetnsRef, family: str, hook: str) -> RawNfHooks | None:
        """The entries as the program copied them (None: no such hook in this kernel)."""
        slot = slot_offset(self.layout, family, hook)
        if slot is None:
            return None
        args = [slot]

        def run() -> RawNfHooks:
            with self._lock:
                self._prog.test_run(FUNC, args)
                data = bpfsys.map_lookup(self._prog.fds["nf_hooks_out"], b"\0" * 4,
                                         ct.sizeof(RawNfHooks))
            if data is None:
                raise KdbgError("the netfilter hook reader's map is empty")
            return RawNfHooks.from_buffer_copy(data)
        out: RawNfHooks = in_netns(ns, run)
        if out.err:
            raise KdbgError("cannot read the namespace's " +
                            ("struct net" if out.err == ERR_NET else "hook entries"))
        if out.inum != ns.inode:
            raise KdbgError(f"the hook reader read netns {out.inum}, not {ns.inode}")
        return out

    def read(self, ns: NetnsRef, family: str, hook: str,
             kallsyms: Kallsyms | None = None) -> HookList | None:
        """The hook functions at ``hook`` of ``family`` in ``ns``, in the kernel's order,
        named with ``kallsyms`` (or the reader's own)."""
        if kallsyms is not None and self._ksyms is None:
            self._ksyms = kallsyms
        raw = self.raw(ns, family, hook)
        if raw is None:
            return None
        fns = [self.name(raw.hooks[i], kallsyms) for i in range(raw.copied)]
        return HookList(family, hook, tuple(fns), "kernel memory", raw.num)

    def name(self, h: RawNfHook, kallsyms: Kallsyms | None = None) -> HookFn:
        loc = (kallsyms or self.kallsyms).lookup(h.fn)
        if loc.symbol is None:
            return HookFn(h.priority, f"0x{h.fn:x}")
        func = loc.symbol if loc.offset == 0 else str(loc).split(" [", 1)[0]
        kind = XT_KINDS.get(loc.symbol) or ("nftables" if loc.symbol in NFT_FUNCS else None)
        table = h.table.decode(errors="replace") or None if loc.symbol in XT_KINDS else None
        return HookFn(h.priority, func, loc.module, table, kind)


@cache
def reader() -> MemoryReader:
    """The process's one reader (its program stays loaded, unattached, until exit)."""
    return MemoryReader()


# ``nft list hooks`` (nftables' print_hooks): "family ip {", "\thook input {", then one
# line per function: the priority as %011d / " %010u" / "+%010u", then "chain FAMILY
# TABLE CHAIN" or the function's name, then " [module]".
_NFT_FAMILY = re.compile(r"^family (\S+) \{$")
_NFT_HOOK = re.compile(r"^\s*hook (\S+) \{$")
_NFT_ENTRY = re.compile(r"^\s*([-+ ]?\d+) (?:chain (\S+ \S+ \S+)|(\S+))(?: \[(\S+)\])?$")
NFT_FAMILIES = {"ip": "ipv4", "ip6": "ipv6", "bridge": "bridge", "arp": "arp"}


def parse_nft_hooks(text: str) -> dict[tuple[str, str], tuple[HookFn, ...]]:
    """``nft list hooks`` output: each (family, hook)'s functions, in order."""
    out: dict[tuple[str, str], list[HookFn]] = {}
    fam = hook = None
    for line in text.splitlines():
        if m := _NFT_FAMILY.match(line):
            fam = NFT_FAMILIES.get(m.group(1), m.group(1))
        elif m := _NFT_HOOK.match(line):
            hook = m.group(1)
            out.setdefault((fam or "", hook), [])
        elif (m := _NFT_ENTRY.match(line)) and fam is not None and hook is not None:
            prio, chain, func, module = m.groups()
            fn = (HookFn(int(prio), f"nft_do_chain ({chain})", module, chain, "nftables")
                  if chain else HookFn(int(prio), func, module,
                                       kind=XT_KINDS.get(func or "")))
            out[(fam, hook)].append(fn)
    return {k: tuple(v) for k, v in out.items()}


def from_nft(ns: NetnsRef, family: str, hook: str) -> tuple[HookList | None, str]:
    """The hooks as ``nft list hooks`` shows them in ``ns`` (None: it showed none at that
    hook), and the command's whole output."""
    nft_family = next((k for k, v in NFT_FAMILIES.items() if v == family), None)
    if nft_family is None:
        return None, ""
    try:
        text = ns.run(["nft", "list", "hooks", nft_family], what="nft list hooks")
    except ProbeUnavailable:
        return None, ""
    fns = parse_nft_hooks(text).get((family, hook))
    if not fns:
        return None, text
    return HookList(family, hook, fns, "nft list hooks", len(fns)), text


class _NftAnswers:
    """Whether this kernel answers ``nft list hooks`` (None: not known yet). It does not
    when the command prints nothing for a family that kernel memory shows hooks in:
    the kernel has no nfnetlink_hook, and the command is not run again."""

    known: bool | None = None


def hooks_at(ns: NetnsRef, family: str, hook: str,
             kallsyms: Kallsyms | None = None) -> HookList | None:
    """The hook functions at ``hook``: from ``nft list hooks`` where the kernel answers
    it, else from kernel memory (functions named with ``kallsyms``, by default a table
    of the reader's own). None when neither can say (a hook this family lacks)."""
    text = None
    if _NftAnswers.known is not False:
        found, text = from_nft(ns, family, hook)
        if found is not None:
            _NftAnswers.known = True
            return name_xt_tables(found)
    mem = reader().read(ns, family, hook, kallsyms)
    if mem is not None and mem.total and text is not None and not text.strip():
        _NftAnswers.known = False
    return name_xt_tables(mem) if mem is not None else None


# x_tables' tables by the enum member of their priority (iptable_raw at NF_IP_PRI_RAW, or
# NF_IP_PRI_RAW_BEFORE_DEFRAG with its raw_before_defrag parameter; iptable_filter at
# NF_IP_PRI_FILTER; iptable_security at NF_IP_PRI_SECURITY; ip6tables' the same): the
# table a do_table function runs where neither source names it (``nft list hooks``
# prints none; kernel memory has none where x_tables is a module, as in Debian's).
XT_PRIORITY_TABLES = {"RAW": "raw", "RAW_BEFORE_DEFRAG": "raw", "FILTER": "filter",
                      "SECURITY": "security"}
XT_PRIORITY_ENUMS = {"ipt_do_table": ("nf_ip_hook_priorities", "NF_IP_PRI_"),
                     "ip6t_do_table": ("nf_ip6_hook_priorities", "NF_IP6_PRI_")}
XT_MANGLE = {"iptable_mangle_hook", "ip6table_mangle_hook"}


@cache
def _priorities(enum: str, prefix: str) -> dict[int, str]:
    try:
        values = Btf.load().enum(enum)
    except (BtfError, OSError):
        return {}
    return {v: XT_PRIORITY_TABLES[k[len(prefix):]] for k, v in values.items()
            if k[len(prefix):] in XT_PRIORITY_TABLES}


def name_xt_tables(hooks: HookList,
                   priorities: Any = _priorities) -> HookList:
    """``hooks`` with each x_tables function that has no table named after its priority
    (the kernel's own enum, from BTF) or, for the mangle tables' wrappers, mangle."""
    fns = []
    for fn in hooks.functions:
        if fn.table is None and fn.function in XT_MANGLE:
            fn = HookFn(fn.priority, fn.function, fn.module, "mangle", fn.kind)
        elif fn.table is None and fn.function in XT_PRIORITY_ENUMS:
            table = priorities(*XT_PRIORITY_ENUMS[fn.function]).get(fn.priority)
            if table is not None:
                fn = HookFn(fn.priority, fn.function, fn.module, table, fn.kind)
        fns.append(fn)
    return HookList(hooks.family, hooks.hook, tuple(fns), hooks.source, hooks.total)


def label_chains(hooks: HookList, chains: Iterable[tuple[str, str, str, str, int]]
                 ) -> HookList:
    """``hooks`` with each nftables function named after its chain: ``chains`` are the
    namespace's base chains as (family, table, chain, hook, priority); a function
    matches the chains of its table family, hook and priority (more than one: each
    is named, in the order given)."""
    fns = []
    for fn in hooks.functions:
        fam = NFT_FUNCS.get(fn.function)
        if fn.kind == "nftables" and fn.table is None and fam is not None:
            names = [f"{f} {t} {c}" for f, t, c, h, p in chains
                     if f == fam and h == hooks.hook and p == fn.priority]
            if names:
                fn = HookFn(fn.priority, fn.function, fn.module, " or ".join(names), fn.kind)
        fns.append(fn)
    return HookList(hooks.family, hooks.hook, tuple(fns), hooks.source, hooks.total)
