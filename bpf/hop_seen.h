/* What a packet looks like at a hop point, as kdbg path's records and the journey's hops
 * both carry it (bpf/kdbg_hop.h fills it), and which hop point (tracepoint) that was.
 * kdbg/trace/hops.py mirrors both with ctypes and a unit test fails when the two drift
 * apart. Keep fields naturally aligned and use only the __u8/__u16/__u32/__s32/__u64
 * types the mirror understands.
 */
#ifndef KDBG_HOP_SEEN_H
#define KDBG_HOP_SEEN_H

/* Which tracepoint fired: the "tp" of a path record or of a journey's hop. */
#define KDBG_TP_NET_DEV_QUEUE 1
#define KDBG_TP_NETIF_RX 2
#define KDBG_TP_NETIF_RECEIVE_SKB 3
#define KDBG_TP_NETIF_RECEIVE_SKB_ENTRY 4
#define KDBG_TP_NAPI_GRO_RECEIVE_ENTRY 5
#define KDBG_TP_KFREE_SKB 6
#define KDBG_TP_CONSUME_SKB 7

#define KDBG_HOP_IFNAMSIZ 16

struct kdbg_hop_seen {
	__u32 netns;		/* inode of the skb's network namespace, 0 if unknown */
	__s32 ifindex;		/* 0 if the skb has no device */
	__u32 len;		/* skb->len */
	__u16 protocol;		/* ethertype, host order */
	__u8 family;		/* 4, 6, or 0 when the L3 header was not parsed */
	__u8 l4proto;		/* IPPROTO_*, 0 when unknown */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 l4_valid;		/* ports or ICMP fields were read */
	__u8 pad0;
	__u16 sport;		/* host order; ICMP: identifier */
	__u16 dport;		/* host order; ICMP: sequence */
	__u8 saddr[16];		/* IPv4 in the first four bytes */
	__u8 daddr[16];
	char ifname[KDBG_HOP_IFNAMSIZ];
};

#endif
