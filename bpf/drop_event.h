/* The record the drop tracer sends to user space, one per matching drop.
 *
 * Declared here once; kdbg/trace/layout.py mirrors it with ctypes and a unit
 * test fails when the two drift apart. Keep fields naturally aligned and use
 * only the __u8/__u16/__u32/__s32/__u64 types the mirror understands.
 */
#ifndef KDBG_DROP_EVENT_H
#define KDBG_DROP_EVENT_H

#define KDBG_IFNAMSIZ 16
#define KDBG_COMMLEN 16

struct kdbg_drop_event {
	__u64 time_ns;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 skbaddr;
	__u64 location;		/* return address in the function that dropped */
	__u32 tgid;
	__u32 tid;
	__u32 cpu;
	__u32 reason;		/* enum skb_drop_reason, as numbered by this kernel */
	__u32 netns;		/* inode of the skb's network namespace, 0 if unknown */
	__s32 ifindex;		/* 0 if the skb has no device */
	__u32 len;		/* skb->len */
	__s32 stack_id;		/* in the stacks map; negative if not captured */
	__u16 protocol;		/* ethertype, host order */
	__u8 family;		/* 4, 6, or 0 when the L3 header was not parsed */
	__u8 l4proto;		/* IPPROTO_*, 0 when unknown */
	__u16 sport;		/* host order; ICMP: identifier */
	__u16 dport;		/* host order; ICMP: sequence */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 l4_valid;		/* ports or ICMP fields were read */
	__u8 pad0;
	__u8 saddr[16];		/* IPv4 in the first four bytes */
	__u8 daddr[16];
	char ifname[KDBG_IFNAMSIZ];
	char comm[KDBG_COMMLEN];
};

/* Key of the in-kernel counters behind --stats (and kdbg exporter). */
struct kdbg_stats_key {
	__u64 location;
	__u32 reason;
	__u32 netns;		/* 0 unless the program counts per device (STATS_BY_DEV) */
	char ifname[KDBG_IFNAMSIZ];	/* "" unless the program counts per device */
};

/* Slots of the per-CPU counters array. */
#define KDBG_CTR_LOST 0		/* ring buffer full: event not delivered */
#define KDBG_CTR_STATS_FULL 1	/* stats table full: drop not counted per key */
#define KDBG_CTR_SEEN 2		/* drops the probe looked past reason and location at */
#define KDBG_NR_CTRS 3
/* Drops that passed every filter = the sum of the stats table + KDBG_CTR_STATS_FULL. */

#endif
