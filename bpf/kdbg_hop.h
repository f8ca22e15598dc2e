/* What a packet looks like at a hop point (struct kdbg_hop_seen): its device and
 * namespace, and its length, ethertype and L3/L4 summary. The one parser of kdbg path
 * (bpf/path.bpf.c) and the journey (bpf/journey.bpf.c).
 *
 * Before including it, define the struct offsets SKB_SK, SKB_HEAD, SKB_DATA,
 * SKB_PROTOCOL, SKB_NETWORK_HDR, SKB_TRANSPORT_HDR, SKB_LEN, DEV_IFINDEX, DEV_NAME,
 * DEV_NET, SK_NET and NET_INUM (from the running kernel's BTF), and include kdbg_read.h.
 * The struct it fills must start zeroed.
 *
 * HOP_FIELD(T, base, off) reads a field of the skb, device, socket or namespace: by
 * default with a helper (a raw tracepoint's skb is a plain number); a BTF-typed program
 * (tp_btf) defines it as a plain load first. The packet's bytes are always read with
 * a helper.
 */
#ifndef KDBG_HOP_H
#define KDBG_HOP_H

#include "hop_seen.h"

#ifndef HOP_FIELD
#define HOP_FIELD(T, base, off) KDBG_READ_FIELD(T, base, off)
#endif

/* The device's index and name, and the namespace: the device's, or (queued to a
 * socket, the skb has lost its device but not its owner) the owning socket's. */
static __always_inline void kdbg_hop_dev(struct kdbg_hop_seen *e, __u64 skb, __u64 dev)
{
	__u64 net = 0, sk;

	if (dev) {
		e->ifindex = HOP_FIELD(__s32, dev, DEV_IFINDEX);
		*(__u64 *)&e->ifname[0] = HOP_FIELD(__u64, dev, DEV_NAME);
		*(__u64 *)&e->ifname[8] = HOP_FIELD(__u64, dev, DEV_NAME + 8);
		net = HOP_FIELD(__u64, dev, DEV_NET);
	} else {
		sk = HOP_FIELD(__u64, skb, SKB_SK);
		if (sk)
			net = HOP_FIELD(__u64, sk, SK_NET);
	}
	if (net)
		e->netns = HOP_FIELD(__u32, net, NET_INUM);
}

/* Length, ethertype and the L3/L4 summary. On receive the MAC header has been pulled,
 * so L3 starts at skb->data; on transmit (and at the end of a path) the network header
 * offset is the one to trust. */
static __always_inline void kdbg_hop_packet(struct kdbg_hop_seen *e, __u64 skb, int rx)
{
	__u64 head, data;
	__u16 nh = 0xffff, th = 0xffff, proto_be = 0;

	e->len = HOP_FIELD(__u32, skb, SKB_LEN);
	proto_be = HOP_FIELD(__u16, skb, SKB_PROTOCOL);
	e->protocol = __builtin_bswap16(proto_be);
	head = HOP_FIELD(__u64, skb, SKB_HEAD);
	if (rx) {
		data = HOP_FIELD(__u64, skb, SKB_DATA);
		if (data >= head && data - head < 0xffff)
			nh = data - head;
	} else {
		nh = HOP_FIELD(__u16, skb, SKB_NETWORK_HDR);
	}
	th = HOP_FIELD(__u16, skb, SKB_TRANSPORT_HDR);
	if (!head || nh == 0xffff)
		return;

	__u64 l4 = 0;
	if (e->protocol == 0x0800) {
		__u8 iph[20] = {};
		bpf_probe_read_kernel(iph, sizeof(iph), (void *)(head + nh));
		if ((iph[0] >> 4) != 4)
			return;
		e->family = 4;
		e->l4proto = iph[9];
		__builtin_memcpy(e->saddr, &iph[12], 4);
		__builtin_memcpy(e->daddr, &iph[16], 4);
		/* Only the first fragment carries the L4 header. */
		if (((iph[6] & 0x1f) | iph[7]) == 0)
			l4 = head + nh + (iph[0] & 0x0f) * 4;
	} else if (e->protocol == 0x86DD) {
		__u8 ip6h[40] = {};
		bpf_probe_read_kernel(ip6h, sizeof(ip6h), (void *)(head + nh));
		if ((ip6h[0] >> 4) != 6)
			return;
		e->family = 6;
		e->l4proto = ip6h[6];
		__builtin_memcpy(e->saddr, &ip6h[8], 16);
		__builtin_memcpy(e->daddr, &ip6h[24], 16);
		/* Extension headers: trust the transport header if it is set. */
		if (e->l4proto == 6 || e->l4proto == 17 || e->l4proto == 58)
			l4 = head + nh + 40;
		else if (th != 0xffff && th > nh)
			l4 = head + th;
	}
	if (!l4)
		return;
	__u64 raw = 0;
	if (bpf_probe_read_kernel(&raw, sizeof(raw), (void *)l4) != 0)
		return;
	KDBG_L4_FIELDS(e, raw);
}

/* The locals the packet filters' C reads (kdbg/trace/filters.py c_packet), from the
 * struct kdbg_hop_seen e points to: declare them, then the filter's statements, which
 * return 0. */
#define KDBG_PACKET_FILTER_LOCALS(e)						\
	__u8 family = (e)->family, l4proto = (e)->l4proto, l4_valid = (e)->l4_valid;	\
	__u16 sport = (e)->sport, dport = (e)->dport;					\
	__u8 has_ports = l4_valid && (l4proto == 6 || l4proto == 17 || l4proto == 132);	\
	__u32 s[4], d[4];								\
	__builtin_memcpy(s, (e)->saddr, 16);						\
	__builtin_memcpy(d, (e)->daddr, 16)

#endif
