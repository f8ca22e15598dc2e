/* The records the path tracer sends to user space: one per hop of a tracked
 * packet, and one when its path ends (dropped or consumed).
 *
 * Declared here once; kdbg/path/layout.py mirrors it with ctypes and a unit
 * test fails when the two drift apart. Keep fields naturally aligned and use
 * only the __u8/__u16/__u32/__s32/__u64 types the mirror understands.
 */
#ifndef KDBG_PATH_EVENT_H
#define KDBG_PATH_EVENT_H

#define KDBG_PATH_IFNAMSIZ 16

/* Which tracepoint fired: the event's "tp" field. */
#define KDBG_TP_NET_DEV_QUEUE 1
#define KDBG_TP_NETIF_RX 2
#define KDBG_TP_NETIF_RECEIVE_SKB 3
#define KDBG_TP_NETIF_RECEIVE_SKB_ENTRY 4
#define KDBG_TP_NAPI_GRO_RECEIVE_ENTRY 5
#define KDBG_TP_KFREE_SKB 6
#define KDBG_TP_CONSUME_SKB 7

/* Value of the tracking map, keyed by skb address. */
struct kdbg_path_track {
	__u64 first_ns;		/* when the first hop was seen; names the packet with skb */
	__u64 last_ns;		/* when the latest hop was seen */
};

struct kdbg_path_event {
	__u64 time_ns;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 first_ns;		/* time_ns of the packet's first hop */
	__u64 skbaddr;
	__u64 location;		/* end events: the caller of kfree_skb/consume_skb */
	__u32 reason;		/* kfree_skb: enum skb_drop_reason, as numbered by this kernel */
	__u32 netns;		/* inode of the skb's network namespace, 0 if unknown */
	__s32 ifindex;		/* 0 if the skb has no device */
	__u32 len;		/* skb->len */
	__u32 cpu;
	__u16 protocol;		/* ethertype, host order */
	__u8 tp;		/* KDBG_TP_* */
	__u8 family;		/* 4, 6, or 0 when the L3 header was not parsed */
	__u8 l4proto;		/* IPPROTO_*, 0 when unknown */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 l4_valid;		/* ports or ICMP fields were read */
	__u16 sport;		/* host order; ICMP: identifier */
	__u16 dport;		/* host order; ICMP: sequence */
	__u8 saddr[16];		/* IPv4 in the first four bytes */
	__u8 daddr[16];
	char ifname[KDBG_PATH_IFNAMSIZ];
};

/* Slots of the per-CPU counters array. */
#define KDBG_PATH_CTR_LOST 0		/* ring buffer full: event not delivered */
#define KDBG_PATH_CTR_TRACK_FULL 1	/* tracking map refused a new packet */
#define KDBG_PATH_CTR_PACKETS 2		/* packets that matched the filters */
#define KDBG_PATH_CTR_ENDS 3		/* paths that ended (dropped or consumed) */
#define KDBG_PATH_NR_CTRS 4

#endif
