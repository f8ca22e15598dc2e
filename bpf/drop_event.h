/* The records the drop tracer shares with user space.
 *
 * Declared here once; kdbg/trace/layout.py mirrors them with ctypes and a unit
 * test fails when the two drift apart. Keep fields naturally aligned and use
 * only the __u8/__u16/__u32/__s32/__u64 types the mirror understands.
 */
#ifndef KDBG_DROP_EVENT_H
#define KDBG_DROP_EVENT_H

#define KDBG_IFNAMSIZ 16
#define KDBG_COMMLEN 16

/* One matching drop, sent to user space while the ring buffer has room. */
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
	__u8 family;		/* 4, 6, 3 for ARP (NFPROTO_ARP), or 0 when the L3 header
				 * was not parsed */
	__u8 l4proto;		/* IPPROTO_*, 0 when unknown */
	__u16 sport;		/* host order; ICMP: identifier; ARP: the operation */
	__u16 dport;		/* host order; ICMP: sequence */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 l4_valid;		/* ports or ICMP fields were read */
	__u8 chain;		/* the learned call chain the drop ran through (struct kdbg_chain.id), 0: none */
	__u8 saddr[16];		/* IPv4 in the first four bytes */
	__u8 daddr[16];
	char ifname[KDBG_IFNAMSIZ];
	char comm[KDBG_COMMLEN];
	__u32 mark;		/* skb->mark at the drop */
	__u8 ctinfo;		/* skb->_nfct & 7 (enum ip_conntrack_info); KDBG_CT_NONE: no
				 * conntrack field in this kernel's sk_buff */
	__u8 ct;		/* KDBG_CT_ATTACHED: an entry is attached (skb->_nfct & ~7);
				 * KDBG_CT_READ: ct_zone and ct_mark were read from it */
	__u16 ct_zone;		/* the entry's zone id (nf_conn.zone.id) */
	__u32 ct_mark;		/* the entry's mark (nf_conn.mark) */
	__u32 ct_status;	/* KDBG_CT_STATUS: the entry's status bits (the low 32 of
				 * nf_conn.status: enum ip_conntrack_status) */
	/* KDBG_CT_TUPLE: the entry's original-direction tuple
	 * (nf_conn.tuplehash[IP_CT_DIR_ORIGINAL].tuple), its 40 bytes as struct
	 * nf_conntrack_tuple lays them out, read at once */
	__u8 ct_orig_saddr[16];	/* src.u3 */
	__u16 ct_orig_sport;	/* src.u.all, network order (ICMP: the echo id) */
	__u16 ct_orig_l3num;	/* src.l3num: NFPROTO_IPV4 (2), NFPROTO_IPV6 (10) */
	__u8 ct_orig_daddr[16];	/* dst.u3 */
	__u16 ct_orig_dport;	/* dst.u.all, network order (ICMP: type, code) */
	__u8 ct_orig_l4proto;	/* dst.protonum */
	__u8 ct_orig_dir;	/* dst.dir */
	/* KDBG_CT_REPLY_TUPLE: the entry's reply-direction tuple
	 * (nf_conn.tuplehash[IP_CT_DIR_REPLY].tuple), laid out the same */
	__u8 ct_reply_saddr[16];
	__u16 ct_reply_sport;
	__u16 ct_reply_l3num;
	__u8 ct_reply_daddr[16];
	__u16 ct_reply_dport;
	__u8 ct_reply_l4proto;
	__u8 ct_reply_dir;
};

#define KDBG_CT_NONE 0xff
#define KDBG_CT_ATTACHED 1
#define KDBG_CT_READ 2
#define KDBG_CT_STATUS 4
#define KDBG_CT_TUPLE 8
#define KDBG_CT_REPLY_TUPLE 16

/* Key of the in-kernel counters behind --stats (and kdbg exporter). */
struct kdbg_stats_key {
	__u64 location;
	__u32 reason;
	__u32 netns;		/* 0 unless the program counts per device (STATS_BY_DEV) */
	char ifname[KDBG_IFNAMSIZ];	/* "" unless the program counts per device */
};

/* The stats table's per-CPU front: one slot per reason (its code modulo KDBG_TALLY_SLOTS)
 * counts the drops of the key it holds, and moves its count into the table only when a
 * drop of another key comes (a storm of one kind costs an array slot per drop, not a
 * hash lookup). The counts are the table's plus the slots'. */
#define KDBG_TALLY_SLOTS 64
struct kdbg_tally {
	struct kdbg_stats_key key;
	__u64 count;
};

/* Key of the drops counted instead of sent while the ring buffer is full (kdbg watch's
 * "... and N more like this"): the drop's reason, place, device and packet. */
struct kdbg_more_key {
	__u64 location;
	__u32 reason;
	__u32 netns;
	__s32 ifindex;
	__u8 family;
	__u8 l4proto;
	__u8 l4_valid;
	__u8 coarse;		/* 1: without addresses and ports (the table by packet was full) */
	__u16 sport;
	__u16 dport;
	__u8 icmp_type;
	__u8 icmp_code;
	__u16 chain;		/* a BPF verdict's: how it was seen and where its program runs
				 * (bpf/bpf_verdict.bpf.c, the record's chain); 0 for a drop */
	__u8 saddr[16];
	__u8 daddr[16];
	char ifname[KDBG_IFNAMSIZ];
};

/* A call chain user space learned once from a drop's stack (kdbg/trace/chains.py): the
 * return addresses on the kernel stack from the program's own frame up to the frame
 * that decides the drop's cause (for NETFILTER_DROP, the function that ran the hook),
 * each at its offset from the program's frame pointer. A drop whose stack holds every
 * one of them there ran through the same functions, called from the same places, so
 * its cause reads the same frames: checking them replaces the stack walk. */
#define KDBG_CHAIN_SLOTS 12
#define KDBG_CHAINS_PER_SITE 16
#define KDBG_CHAIN_SPAN 2048	/* bytes above the frame pointer a chain may reach */
struct kdbg_chain {
	__u16 id;		/* 0: an empty entry */
	__u16 nslots;
	__u16 span;		/* bytes from the frame pointer that hold every slot */
	__u16 pad0;
	__u16 off[KDBG_CHAIN_SLOTS];	/* each return address's offset from the frame pointer */
	__u64 ret[KDBG_CHAIN_SLOTS];	/* the return address found there */
};

/* The chains learned for one drop location (the key of the chains map). */
struct kdbg_chains {
	__u32 span;		/* the largest of the chains' spans */
	__u32 pad0;
	struct kdbg_chain c[KDBG_CHAINS_PER_SITE];
};

/* A drop's stack for user space to learn a chain from: its frames, and the kernel
 * stack's pages from the program's frame up to the end of that stack. */
#define KDBG_LEARN_FRAMES 16
#define KDBG_LEARN_PAGES 9	/* a 32 KiB stack (KASAN's) from anywhere in its first page */
#define KDBG_PAGE 4096
#define KDBG_LEARN_BYTES 36864	/* KDBG_LEARN_PAGES * KDBG_PAGE */
struct kdbg_learn {
	__u64 fp;		/* the program's frame pointer */
	__u64 location;
	__s32 frames_bytes;	/* bpf_get_stack()'s result: bytes of frames, or -errno */
	__u32 pages;		/* pages read from fp's page on, the first from fp on */
	__u32 reason;
	__u32 pad0;
	__u64 frames[KDBG_LEARN_FRAMES];
	__u8 stack[KDBG_LEARN_BYTES];	/* from fp & ~4095 on */
};

/* Slots of the per-CPU counters array. */
#define KDBG_CTR_LOST 0		/* neither sent nor counted per key: truly lost */
#define KDBG_CTR_STATS_FULL 1	/* stats table full: drop not counted per key */
#define KDBG_CTR_SEEN 2		/* drops the probe looked past reason and location at */
#define KDBG_CTR_MATCHED 3	/* drops that passed every filter (without a stats table) */
#define KDBG_NR_CTRS 4
/* Drops that passed every filter = the sum of the stats table + KDBG_CTR_STATS_FULL
 * with a stats table, else KDBG_CTR_MATCHED. */

#endif
