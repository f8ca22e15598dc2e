/* A packet's journey: the hops of each followed packet, kept in the kernel in a table
 * of slots (a BPF array) until its skb is dropped, and copied into its drop's record.
 *
 * Declared here once; kdbg/trace/journeylayout.py mirrors it with ctypes (and gdb reads
 * a slot from the target's memory with that mirror, kdbg-journey) and a unit test fails
 * when the two drift apart. Keep fields naturally aligned and use only the
 * __u8/__u16/__u32/__s32/__u64 types the mirror understands.
 *
 * The table is direct-mapped: an skb's slot is KDBG_JOURNEY_SLOT(skb, bits), the top
 * bits of its address times 2^64/phi. A slot belongs to the packet whose skb is
 * skbaddr, named with first_ns (skb memory is reused as soon as a packet is freed),
 * until that skb is freed or consumed (ended) or has no hop for the idle time.
 */
#ifndef KDBG_JOURNEY_H
#define KDBG_JOURNEY_H

#include "drop_event.h"
#include "hop_seen.h"	/* struct kdbg_hop_seen; KDBG_TP_*: a hop's "tp" */

#define KDBG_JOURNEY_HOPS 16		/* a slot keeps the last 16 hops (a power of two) */
#define KDBG_JOURNEY_KINDSIZ 16
#define KDBG_JOURNEY_HASH 0x9E3779B97F4A7C15ULL
#define KDBG_JOURNEY_SLOT(skb, bits) ((__u32)(((skb) * KDBG_JOURNEY_HASH) >> (64 - (bits))))

/* Why a packet that matched the filters has no slot: refused_why. */
#define KDBG_JOURNEY_BUSY 1		/* its slot followed another live packet */

/* One hop: where the packet was and what it looked like there. */
struct kdbg_journey_hop {
	__u64 time_ns;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 dev;		/* the net_device's address (0: none); the same as the previous
				 * hop's: the same device, whose fields are copied, not read */
	struct kdbg_hop_seen seen;	/* the device, namespace and packet */
	__u8 tp;		/* KDBG_TP_* */
	__u8 pad0[3];
	char kind[KDBG_JOURNEY_KINDSIZ];	/* the device's rtnl_link_ops->kind: veth, bridge,
					 * vxlan...; "" for a device without one (a NIC, lo) */
};

/* A slot of the table. */
struct kdbg_journey {
	__u64 skbaddr;		/* the skb followed; 0: never used */
	__u64 first_ns;		/* its first hop */
	__u64 last_ns;		/* its latest hop */
	__u64 refused_skb;	/* the last skb that matched but was not followed here */
	__u32 nhops;		/* hops seen; hops[i % KDBG_JOURNEY_HOPS] holds hop i */
	__u32 ended;		/* 1: the skb was freed or consumed: the slot is free */
	__u32 refused_why;	/* KDBG_JOURNEY_BUSY */
	__u32 refused_ended;	/* 1: refused_skb was freed since (a new packet may reuse it) */
	struct kdbg_journey_hop hops[KDBG_JOURNEY_HOPS];
};

/* The drop record of kdbg watch --journey: the drop event, where the table is, and a
 * copy of the skb's slot as it was at the drop, up to its last kept hop (the hops
 * after nhops are not written). */
struct kdbg_journey_drop {
	struct kdbg_drop_event ev;
	__u64 table;		/* kernel address of the table's slot 0 */
	__u32 slot;		/* the skb's slot */
	__u32 slots;		/* slots in the table (a power of two) */
	__u64 ring_full_ns;	/* when a drop on this CPU last found the ring buffer full, if
				 * none was sent since (no new packet is followed then), else 0 */
	__u32 followed;		/* 1: the slot followed this very packet until its drop (not
				 * an earlier one whose skb this one reuses) */
	__u32 pad0;
	struct kdbg_journey journey;
};

/* Slots of the journey's per-CPU counters. */
#define KDBG_JOURNEY_CTR_FOLLOWED 0	/* packets followed */
#define KDBG_JOURNEY_CTR_BUSY 1		/* packets not followed: their slot was busy */
#define KDBG_JOURNEY_NR_CTRS 2

#endif
