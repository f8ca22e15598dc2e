/* kdbg drop tracer: runs on the skb:kfree_skb tracepoint.
 *
 * A template: kdbg/trace/program.py fills every double-braced name and refuses to
 * load text with one left. Tracepoint record offsets come from the tracefs
 * format file; struct offsets (sk_buff, net_device, sock, net) come from the
 * running kernel's BTF, never from the headers bcc compiles against.
 */
#include "drop_event.h"
#include "drop_record.h"
#include "kdbg_read.h"

#define TP_OFF_SKBADDR   8
#define TP_OFF_LOCATION  16
#define TP_OFF_PROTOCOL  24
#define TP_OFF_REASON    28
#define TP_OFF_RX_SK     -1	/* -1: no rx_sk field (before 6.11) */

#define SKB_DEV          16
#define SKB_SK           24
#define SKB_HEAD         192
#define SKB_NETWORK_HDR  180
#define SKB_TRANSPORT_HDR 178
#define SKB_LEN          112
#define DEV_IFINDEX      224
#define DEV_NAME         280
#define DEV_NET          264	/* -1: no network namespaces */
#define SK_NET           48
#define NET_INUM         176

#define WANT_STACK       0
/* With WANT_STACK: whether a drop of this reason has its stack taken: every drop (1),
 * or only the reasons whose causes read it (kdbg/causes/registry.py: NETFILTER_DROP's,
 * for the hook; a stack walk costs every other drop for nothing). */
#define STACK_WANTED(reason) (1)
#define STATS_ONLY       1
/* 1: no filter looks past reason and location, so --stats reads nothing more. */
#define COUNT_EARLY      1
/* 1: a filter on netns or device, so the device is read before the packet. */
#define DEV_FILTER       0
/* 1: the stats key carries netns and ifname too (kdbg exporter's labels). */
#define STATS_BY_DEV     0

BPF_RINGBUF_OUTPUT(events, 256);
/* Per-CPU counts: no atomic operations and no shared cache lines under a storm. */
BPF_PERCPU_HASH(stats, struct kdbg_stats_key, __u64, 16384);
BPF_PERCPU_ARRAY(counters, __u64, KDBG_NR_CTRS);
#if WANT_STACK
BPF_STACK_TRACE(stacks, 4096);
#endif

static __always_inline void count(int slot)
{
	__u64 *v = counters.lookup(&slot);
	if (v)
		(*v)++;
}

static __always_inline void count_match(__u32 reason, __u64 location,
					const struct kdbg_drop_event *e)
{
	struct kdbg_stats_key key = {.location = location, .reason = reason};
	__u64 zero = 0, *n;

#if STATS_BY_DEV
	key.netns = e->netns;
	__builtin_memcpy(key.ifname, e->ifname, sizeof(key.ifname));
#endif

	n = stats.lookup_or_try_init(&key, &zero);
	if (n)
		(*n)++;
	else
		count(KDBG_CTR_STATS_FULL);
}

static __always_inline __u32 netns_of(__u64 net)
{
	__u32 inum = 0;
	if (net)
		bpf_probe_read_kernel(&inum, sizeof(inum), (void *)(net + NET_INUM));
	return inum;
}

static __always_inline void read_dev(void *ctx, __u64 skb, struct kdbg_drop_event *e)
{
	__u64 dev = read_ptr(skb, SKB_DEV), sk;

	if (dev) {
		bpf_probe_read_kernel(&e->ifindex, sizeof(e->ifindex), (void *)(dev + DEV_IFINDEX));
		bpf_probe_read_kernel(&e->ifname, sizeof(e->ifname), (void *)(dev + DEV_NAME));
		e->netns = netns_of(read_ptr(dev, DEV_NET));
	}
	if (!e->netns) {
		sk = read_ptr(skb, SKB_SK);
#if TP_OFF_RX_SK >= 0
		if (!sk)
			sk = *(__u64 *)(ctx + TP_OFF_RX_SK);
#endif
		if (sk && SK_NET >= 0)
			e->netns = netns_of(read_ptr(sk, SK_NET));
	}
}

/* A packet's journey (kdbg watch --journey, --break): the maps and hop programs of
 * bpf/journey.bpf.c, or nothing. */

#ifndef KDBG_JOURNEY_FREED
#define KDBG_JOURNEY_FREED(skb)
#endif

int kdbg_on_kfree_skb(void *ctx)
{
	/* The tracepoint record is the context: plain loads, no helper calls. */
	__u64 location = *(__u64 *)(ctx + TP_OFF_LOCATION);
	__u32 reason = *(__u32 *)(ctx + TP_OFF_REASON);
	struct kdbg_drop_event e = {};
	__u64 skb, head;
	__u16 nh = 0xffff, th = 0xffff;

	KDBG_JOURNEY_FREED(*(__u64 *)(ctx + TP_OFF_SKBADDR));	/* its journey's slot is free */
	{
		__u64 loc = location;
		/* filters on reason and location */
		/* none */
	}
#if STATS_ONLY && COUNT_EARLY
	/* --stats with no filter past reason and location: one per-CPU map update
	 * (after reading the device, when the counts are per device). */
#if STATS_BY_DEV
	read_dev(ctx, *(__u64 *)(ctx + TP_OFF_SKBADDR), &e);
#endif
	count_match(reason, location, &e);
	return 0;
#endif
	count(KDBG_CTR_SEEN);
	skb = *(__u64 *)(ctx + TP_OFF_SKBADDR);
	e.location = location;
	e.reason = reason;
	e.protocol = *(__u16 *)(ctx + TP_OFF_PROTOCOL);

	e.skbaddr = skb;
#if DEV_FILTER
	read_dev(ctx, skb, &e);
	{
		__u32 netns = e.netns;
		char *ifname = e.ifname;
		/* filters on netns and device */
		/* none */
	}
#endif

	/* Fewest reads first: this runs for every drop a packet filter may reject. */
	head = read_ptr(skb, SKB_HEAD);
	bpf_probe_read_kernel(&nh, sizeof(nh), (void *)(skb + SKB_NETWORK_HDR));

	if (head && nh != 0xffff) {
		__u8 first = 0;
		__u64 l4 = 0, raw = 0;
		int have_raw = 0;

		if (e.protocol == 0)
			bpf_probe_read_kernel(&first, 1, (void *)(head + nh));
		if (e.protocol == 0x0800 || (e.protocol == 0 && (first >> 4) == 4)) {
			/* The IPv4 header and, when it has no options, the first 8 bytes
			 * of L4 in one read. */
			__u8 iph[28] = {};
			bpf_probe_read_kernel(iph, sizeof(iph), (void *)(head + nh));
			if ((iph[0] >> 4) == 4) {
				e.family = 4;
				e.l4proto = iph[9];
				__builtin_memcpy(e.saddr, &iph[12], 4);
				__builtin_memcpy(e.daddr, &iph[16], 4);
				/* Only the first fragment carries the L4 header. */
				if (((iph[6] & 0x1f) | iph[7]) == 0) {
					if ((iph[0] & 0x0f) == 5) {
						__builtin_memcpy(&raw, &iph[20], 8);
						have_raw = 1;
					} else {
						l4 = head + nh + (iph[0] & 0x0f) * 4;
					}
				}
			}
		} else if (e.protocol == 0x86DD || (e.protocol == 0 && (first >> 4) == 6)) {
			__u8 ip6h[48] = {};
			bpf_probe_read_kernel(ip6h, sizeof(ip6h), (void *)(head + nh));
			if ((ip6h[0] >> 4) == 6) {
				e.family = 6;
				e.l4proto = ip6h[6];
				__builtin_memcpy(e.saddr, &ip6h[8], 16);
				__builtin_memcpy(e.daddr, &ip6h[24], 16);
				if (e.l4proto == 6 || e.l4proto == 17 || e.l4proto == 58) {
					__builtin_memcpy(&raw, &ip6h[40], 8);
					have_raw = 1;
				} else {
					/* Extension headers: trust the transport header if set. */
					bpf_probe_read_kernel(&th, sizeof(th),
							      (void *)(skb + SKB_TRANSPORT_HDR));
					if (th != 0xffff && th > nh)
						l4 = head + th;
				}
			}
		}
		/* Ports, or type/code then id/seq for ICMP, taken from one scalar so
		 * clang emits no computed stack addresses, which the verifier rejects. */
		if (!have_raw && l4)
			have_raw = bpf_probe_read_kernel(&raw, sizeof(raw), (void *)l4) == 0;
		if (have_raw) {
			__u16 w0 = raw, w1 = raw >> 16, w2 = raw >> 32, w3 = raw >> 48;
			if (e.l4proto == 6 || e.l4proto == 17 || e.l4proto == 132) {
				e.sport = __builtin_bswap16(w0);
				e.dport = __builtin_bswap16(w1);
				e.l4_valid = 1;
			} else if (e.l4proto == 1 || e.l4proto == 58) {
				e.icmp_type = w0 & 0xff;
				e.icmp_code = w0 >> 8;
				e.sport = __builtin_bswap16(w2);
				e.dport = __builtin_bswap16(w3);
				e.l4_valid = 1;
			}
		}
	}
	{
		__u8 family = e.family, l4proto = e.l4proto, l4_valid = e.l4_valid;
		__u16 sport = e.sport, dport = e.dport;
		__u8 has_ports = l4_valid && (l4proto == 6 || l4proto == 17 || l4proto == 132);
		__u32 s[4], d[4];
		__builtin_memcpy(s, e.saddr, 16);
		__builtin_memcpy(d, e.daddr, 16);
		/* filters on the packet */
		/* none */
	}
#if !DEV_FILTER
	read_dev(ctx, skb, &e);  /* only for what passed: no filter needed it earlier */
#endif
	bpf_probe_read_kernel(&e.len, sizeof(e.len), (void *)(skb + SKB_LEN));

	count_match(e.reason, e.location, &e);
#if STATS_ONLY
	return 0;
#endif

	e.time_ns = bpf_ktime_get_ns();
	e.cpu = bpf_get_smp_processor_id();
	{
		__u64 id = bpf_get_current_pid_tgid();
		e.tgid = id >> 32;
		e.tid = (__u32)id;
	}
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
#if WANT_STACK
	if (STACK_WANTED(e.reason))
		e.stack_id = stacks.get_stackid(ctx, BPF_F_REUSE_STACKID);
	else
		e.stack_id = -1;
#else
	e.stack_id = -1;
#endif
	/* Hand the event over: one record each (kdbg/trace/program.py), or the record
	 * of bpf/drop_record.bpf.c with the packet's first bytes (kdbg watch --write). */
	if (events.ringbuf_output(&e, sizeof(e), 0) != 0)
		count(KDBG_CTR_LOST);
	return 0;
}
