/* The records the path tracer sends to user space: one per hop of a tracked
 * packet, and one when its path ends (dropped or consumed).
 *
 * Declared here once; kdbg/path/layout.py mirrors it with ctypes and a unit
 * test fails when the two drift apart. Keep fields naturally aligned and use
 * only the __u8/__u16/__u32/__s32/__u64 types the mirror understands.
 */
#ifndef KDBG_PATH_EVENT_H
#define KDBG_PATH_EVENT_H

#include "hop_seen.h"	/* struct kdbg_hop_seen; KDBG_TP_*: the event's "tp" */

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
	__u32 cpu;
	struct kdbg_hop_seen seen;	/* the skb's device, namespace and packet */
	__u8 tp;		/* KDBG_TP_* */
	__u8 pad0[7];
};

/* Slots of the per-CPU counters array. */
#define KDBG_PATH_CTR_LOST 0		/* ring buffer full: event not delivered */
#define KDBG_PATH_CTR_TRACK_FULL 1	/* tracking map refused a new packet */
#define KDBG_PATH_CTR_PACKETS 2		/* packets that matched the filters */
#define KDBG_PATH_CTR_ENDS 3		/* paths that ended (dropped or consumed) */
#define KDBG_PATH_NR_CTRS 4

#endif
