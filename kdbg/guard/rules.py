"""The guard's policy: which code is dangerous to stop in, on which transport, and why.

Nothing here is copied from a kernel. Each rule is kdbg's policy, written down
with its source: what KGDBoE and kgdb document, what was seen on the lab, and
what the kernel's own kprobe blocklist covers. Code is put into *categories*
from evidence (source path, module path, kallsyms section, BTF parameter type,
name); each transport then says what it does with each category. The transports are
:mod:`kdbg.transports`' (the ones with kgdb in the target share kgdb's own rules), and
what the guard assumes of each is its ``guard_hint`` there.

Extend by adding a rule to one of the tables below and a line to docs/guard.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdbg import transports

Verdict = str  # "allow" | "warn" | "refuse"

NETWORKING = "networking"
SKB = "skb"
TIMER = "timer"
KGDB = "kgdb"
KGDBOE = "kgdboe"
UART_POLL = "uart-poll"
BLOCKLIST = "blocklist"
NOINSTR = "noinstr"
ENTRY = "entry"
HOT = "hot"

SRC_KGDBOE = "KGDBoE README: no breakpoints in network code, none in mod_timer() " \
             "unless single-CPU"
SRC_KGDBOE_RX = "KGDBoE frees the packets it receives while the kernel is stopped " \
                "(kfree_skb; out of line as kfree_skb_reason on 6.1, sk_skb_reason_drop from 6.11)"
SRC_KGDB = "kgdb cannot debug itself: its exception, roundup and gdbstub code run " \
           "while the kernel is stopped"
SRC_KGDBOC = "kgdboc talks to gdb by polling the UART (console poll hooks) with the kernel stopped"
SRC_BLOCK = "kernel/kprobes.c + arch code blocklist these sections; kgdb refuses blocklisted " \
            "addresses with CONFIG_KGDB_HONOUR_BLOCKLIST, but only at continue"
SRC_BPF = "kdbg policy: an XDP program runs in the driver's receive path (NAPI poll), a tc " \
          "program in the qdisc layer; both are networking code"
SRC_HOT = "kdbg policy: per-CPU paths hit thousands of times a second make a session unusable"


@dataclass(frozen=True)
class PathRule:
    """Source-tree paths (from DWARF or a module's path) that put code in a category."""

    prefix: str
    category: str
    source: str

    def matches(self, path: str) -> bool:
        return path.startswith(self.prefix)


@dataclass(frozen=True)
class NameRule:
    """A function-name pattern. ``specific`` rules name functions and always apply;
    the others stand in for a source path and apply only when no path is known."""

    pattern: str
    category: str
    specific: bool
    source: str

    def matches(self, name: str) -> bool:
        return re.search(self.pattern, name) is not None

    def matched(self, name: str) -> str | None:
        """The part of ``name`` the rule matched (for the evidence line), or None."""
        m = re.search(self.pattern, name)
        return m.group(0) if m else None


PATH_RULES: tuple[PathRule, ...] = (
    PathRule("net/core/skbuff.c", SKB, SRC_KGDBOE_RX),
    PathRule("net/", NETWORKING, SRC_KGDBOE),
    PathRule("drivers/net/", NETWORKING, SRC_KGDBOE + " (the NIC driver KGDBoE polls)"),
    PathRule("include/net/", NETWORKING, SRC_KGDBOE),
    PathRule("include/linux/skbuff", SKB, SRC_KGDBOE_RX),
    PathRule("include/linux/netdevice.h", NETWORKING, SRC_KGDBOE),
    PathRule("include/linux/netpoll.h", NETWORKING, SRC_KGDBOE),
    PathRule("include/linux/netfilter", NETWORKING, SRC_KGDBOE),
    PathRule("include/linux/etherdevice.h", NETWORKING, SRC_KGDBOE),
    PathRule("kernel/time/timer.c", TIMER, SRC_KGDBOE + " (timer wheel: mod_timer, expiry)"),
    PathRule("include/linux/timer.h", TIMER, SRC_KGDBOE),
    PathRule("kernel/debug/", KGDB, SRC_KGDB),
    PathRule("arch/x86/kernel/kgdb.c", KGDB, SRC_KGDB),
    PathRule("arch/arm64/kernel/kgdb.c", KGDB, SRC_KGDB),
    PathRule("include/linux/kgdb.h", KGDB, SRC_KGDB),
    PathRule("drivers/tty/serial/kgdboc.c", UART_POLL, SRC_KGDBOC),
    PathRule("drivers/tty/serial/kgdb_nmi.c", UART_POLL, SRC_KGDBOC),
)
# serial_core.c and 8250_port.c as a whole are not on the poll path, only some of
# their functions are: those are the UART_POLL name rules below.

_NET_PREFIXES = (
    "skb", "kfree_skb", "consume_skb", "alloc_skb", "build_skb", "napi", "netif", "netdev",
    "net_rx_action", "net_tx_action", "netpoll", "dev_queue_xmit", "dev_hard_start_xmit",
    "dev_gro", "gro_", "tcp", "udp", "ip_", "ip4", "ip6", "ipv4", "ipv6", "icmp", "igmp",
    "inet", "sock_", "sk_", "sock_def", "nf_", "nft_", "nfnl", "nfnetlink", "xt_", "ipt_",
    "ip6t_", "ebt_", "arp_", "neigh", "fib", "rtnl", "netlink", "xdp", "xfrm", "dst_",
    "eth_", "br_", "veth", "qdisc", "pfifo", "sch_", "tc_", "tcf_", "packet_", "e1000",
    "virtnet", "virtio_net", "bpf_skb", "sk_filter", "rps_", "flow_", "__dev_queue_xmit",
    # families named after net/ subdirectories and files
    "unix_", "in6_", "inet6_", "rt6_", "fl6_", "ndisc_", "mld_", "addrconf", "ipmr", "ip6mr",
    "ethnl_", "ethtool_", "page_pool", "xsk", "xp_", "bpf_xdp", "scm_", "put_cmsg", "rtm_",
    "nla_", "genl", "sctp", "dccp", "l2tp", "vlan_", "macvlan", "bond_", "team_", "tun_",
    "tap_", "bridge", "dev_ifsioc", "dev_ioctl", "ping_", "raw_v4", "raw_v6", "rawv6_",
    "mptcp", "smc_", "tls_", "espintcp", "esp_", "ah_", "ipcomp", "gre", "ipgre", "ipip",
    "sit_", "nexthop", "nh_", "fib6", "ip6_", "ip6mr", "igmp6", "ndo_", "qdisc_", "net_",
    "__net_", "netns_", "register_net", "unregister_net", "ctnetlink", "nfqnl", "nflog",
)

NAME_RULES: tuple[NameRule, ...] = (
    # skb allocation and freeing: KGDBoE's own receive path frees skbs while stopped.
    NameRule(r"^_*(kfree_skb|sk_skb_reason_drop|consume_skb|napi_consume_skb|kfree_skbmem|"
             r"skb_release_|dev_kfree_skb|__dev_kfree_skb|alloc_skb|__alloc_skb|"
             r"__netdev_alloc_skb|napi_alloc_skb|__napi_alloc_skb|build_skb|skb_free_head)",
             SKB, True, SRC_KGDBOE_RX),
    # the timer wheel: mod_timer and everything that takes the timer base lock.
    NameRule(r"^_*(mod_timer|add_timer|del_timer|timer_delete|timer_shutdown|timer_reduce|"
             r"try_to_del_timer_sync|run_timer|__run_timers|run_local_timers|call_timer_fn|"
             r"expire_timers|lock_timer_base|enqueue_timer|internal_add_timer|detach_timer|"
             r"trigger_dyntick_cpu|timer_base)",
             TIMER, True, SRC_KGDBOE),
    # UART polling path used by kgdboc: the console poll hooks and the 8250 ones.
    NameRule(r"^_*(uart_poll_|kgdboc_|kgdb_nmi_|serial8250_(get|put)_poll_char|"
             r"wait_for_xmitr|wait_for_lsr|serial_lsr_in)|poll_(get|put)_char$",
             UART_POLL, True, SRC_KGDBOC),
    # kgdb core and KGDBoE (when its module name is not in kallsyms, e.g. built in).
    NameRule(r"^_*(kgdb_|kgdb$|gdbstub_|dbg_io_|dbg_(de)?activate_sw_breakpoints|kdb_)",
             KGDB, False, SRC_KGDB),
    NameRule(r"^_*kgdboe", KGDBOE, True, SRC_KGDBOE),
    # networking by name: only when neither DWARF nor a module path placed the code.
    NameRule(r"^_*(" + "|".join(re.escape(p) for p in _NET_PREFIXES) + ")", NETWORKING, False,
             SRC_KGDBOE + " (name stands in for net/ when no source path is known)"),
    # hot paths (warn only).
    NameRule(r"^_*(schedule$|schedule_idle|kmalloc|kmem_cache_alloc|kmem_cache_free|kfree$|"
             r"alloc_pages|get_page_from_freelist|free_unref_page|ktime_get|rcu_read_(un)?lock|"
             r"raw_spin_(un)?lock|spin_(un)?lock|update_curr|scheduler_tick|sched_clock|"
             r"handle_softirqs|do_softirq|irq_enter|irq_exit|copy_(to|from)_user|"
             r"default_idle|native_safe_halt|finish_task_switch|pick_next_task)",
             HOT, True, SRC_HOT),
)

# Module names that place code without a modules.order path.
MODULE_NAME_RULES: tuple[NameRule, ...] = (
    NameRule(r"^kgdboe$", KGDBOE, True, SRC_KGDBOE + " (KGDBoE's own module)"),
)

# JITed BPF programs by kind (the program's type, from bpf_prog_info) → category.
BPF_KINDS: dict[str, str] = {"xdp": NETWORKING, "tc": NETWORKING}

# BTF parameter types (struct/union names) that mark code on the packet path.
BTF_TYPES: dict[str, str] = {
    **{t: NETWORKING for t in (
        "sk_buff", "sk_buff_head", "sock", "sock_common", "socket", "net_device", "napi_struct",
        "netdev_queue", "nf_hook_state", "nf_conn", "nft_pktinfo", "xt_action_param",
        "xdp_buff", "xdp_frame", "netpoll", "inet_sock", "request_sock", "inet_timewait_sock",
        "dst_entry", "rtable", "Qdisc", "neighbour", "packet_type", "gro_list", "netdev_rx_queue",
        "msghdr", "ifreq", "net", "netlink_callback", "nlmsghdr", "genl_info", "ethtool_ops",
        "flowi", "flowi4", "flowi6", "inet6_dev", "in_device", "fib_info", "fib6_info",
    )},
    "timer_base": TIMER,
    "kgdb_state": KGDB,
    "kgdb_io": KGDB,
}

# kallsyms section markers (see kdbg.symbols.evidence.SECTION_MARKERS) → category.
SECTION_CATEGORIES: dict[str, str] = {
    "entry": ENTRY,
    "irqentry": ENTRY,
    "softirqentry": ENTRY,
    "noinstr": NOINSTR,
    "cpuidle": NOINSTR,
    "kprobes": BLOCKLIST,
    "sched": HOT,
    "lock": HOT,
}
SECTION_SOURCES: dict[str, str] = {
    ENTRY: SRC_BLOCK + " (entry text: the trap that reports a breakpoint runs here)",
    NOINSTR: SRC_BLOCK + " (noinstr: no instrumentation allowed, RCU may not be watching)",
    BLOCKLIST: SRC_BLOCK + " (__kprobes section)",
    HOT: SRC_HOT,
}


@dataclass(frozen=True)
class Action:
    """What a transport does with a category: verdict, rule id and a one-line why."""

    verdict: Verdict
    rule: str
    why: str


# what every transport with kgdb in the target refuses: kgdb's own code and blocklist
_KGDB_COMMON: dict[str, Action] = {
    KGDB: Action("refuse", "kgdb-core",
                 "kgdb's own code runs while the kernel is stopped; a breakpoint there re-enters "
                 "the debugger"),
    BLOCKLIST: Action("refuse", "kprobe-blocklist",
                      "the address is on the kprobe blocklist, which kgdb refuses late, only when "
                      "the target resumes"),
    NOINSTR: Action("refuse", "noinstr",
                    "noinstr code runs where a debug trap is unsafe (kgdb blocklists it)"),
    ENTRY: Action("refuse", "entry-text",
                  "entry code is where the breakpoint trap itself is taken (kgdb blocklists it)"),
    HOT: Action("warn", "hot-path",
                "this function runs constantly; the breakpoint will fire on unrelated work"),
}

# each transport's own rules, besides kgdb's
_OWN: dict[str, dict[str, Action]] = {
    transports.KGDBOE.name: {
        NETWORKING: Action("refuse", "kgdboe-networking",
                           "KGDBoE talks to gdb through the network stack; stopping inside it "
                           "deadlocks the session"),
        SKB: Action("refuse", "kgdboe-skb",
                    "KGDBoE allocates and frees skbs while the kernel is stopped; a breakpoint "
                    "there re-enters or deadlocks it"),
        TIMER: Action("refuse", "kgdboe-timer",
                      "KGDBoE needs the timer core (mod_timer) while stopped; a CPU held there "
                      "deadlocks it"),
        KGDBOE: Action("refuse", "kgdboe-self",
                       "this is KGDBoE's own code, which runs while the kernel is stopped"),
    },
    transports.KGDBOC.name: {
        UART_POLL: Action("refuse", "kgdboc-uart-poll",
                          "kgdboc talks to gdb by polling this UART code while the kernel is "
                          "stopped"),
    },
    transports.GDBSTUB.name: {
        HOT: _KGDB_COMMON[HOT],
        ENTRY: Action("warn", "hot-path",
                      "entry code runs on every syscall and interrupt; the breakpoint will fire "
                      "constantly"),
    },
}

POLICY: dict[str, dict[str, Action]] = {
    t.name: {**(_KGDB_COMMON if t.kgdb else {}), **_OWN[t.name]} for t in transports.ALL
}

ALLOW: dict[str, Action] = {
    transports.KGDBOE.name: Action(
        "allow", "kgdboe-safe",
        "no KGDBoE rule matches: not networking, timer, kgdb, blocklisted or entry code"),
    transports.KGDBOC.name: Action(
        "allow", "kgdboc-safe",
        "no kgdboc rule matches: not kgdb, UART polling, blocklisted or entry code"),
    transports.GDBSTUB.name: Action(
        "allow", "gdbstub-external",
        "QEMU's gdb stub stops the whole VM from outside; nothing in the guest takes part"),
}

NOT_TEXT = Action("refuse", "not-kernel-text",
                  "the address is not in kernel or module text, so no breakpoint belongs there")

TRANSPORT_HINTS: dict[str, str] = {t.name: t.guard_hint for t in transports.ALL}
