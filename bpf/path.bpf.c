/* kdbg path tracer: follows packets from hop to hop until they are dropped
 * or consumed.
 *
 * A template: kdbg/path/program.py fills every double-braced name and refuses
 * to load text with one left. Each hop tracepoint the running kernel has gets
 * one small function (KDBG_HOP below) that hands the skb to hop(); the
 * tracepoint record offsets come from tracefs format files, and struct offsets
 * (sk_buff, net_device, net) from the running kernel's BTF, never from headers.
 *
 * A packet is tracked by its skb address: the filters decide at the first hop
 * they match, and every later hop of the same skb is reported even when its
 * headers change (NAT). kfree_skb and consume_skb end the path and forget it;
 * for untracked skbs they cost one hash lookup.
 */
#include "path_event.h"
#include "kdbg_read.h"

#define TP_KFREE_SKBADDR   {{TP_KFREE_SKBADDR}}
#define TP_KFREE_LOCATION  {{TP_KFREE_LOCATION}}
#define TP_KFREE_REASON    {{TP_KFREE_REASON}}
#define TP_CONSUME_SKBADDR {{TP_CONSUME_SKBADDR}}
#define TP_CONSUME_LOCATION {{TP_CONSUME_LOCATION}}	/* -1: no location field */

#define SKB_DEV          {{SKB_DEV}}
#define SKB_SK           {{SKB_SK}}
#define SKB_HEAD         {{SKB_HEAD}}
#define SKB_DATA         {{SKB_DATA}}
#define SKB_PROTOCOL     {{SKB_PROTOCOL}}
#define SKB_NETWORK_HDR  {{SKB_NETWORK_HDR}}
#define SKB_TRANSPORT_HDR {{SKB_TRANSPORT_HDR}}
#define SKB_LEN          {{SKB_LEN}}
#define DEV_IFINDEX      {{DEV_IFINDEX}}
#define DEV_NAME         {{DEV_NAME}}
#define DEV_NET          {{DEV_NET}}	/* -1: no network namespaces */
#define SK_NET           {{SK_NET}}	/* -1: no network namespaces */
#define NET_INUM         {{NET_INUM}}

/* A tracked skb with no hop for this long is looked at afresh: its memory may
 * hold a new packet, the old one freed without a tracepoint (__kfree_skb). */
#define IDLE_NS          {{IDLE_NS}}ULL

BPF_RINGBUF_OUTPUT(events, {{RINGBUF_PAGES}});
BPF_TABLE("lru_hash", __u64, struct kdbg_path_track, tracked, {{TRACK_ENTRIES}});
BPF_PERCPU_ARRAY(counters, __u64, KDBG_PATH_NR_CTRS);

static __always_inline void count(int slot)
{
	__u64 *v = counters.lookup(&slot);
	if (v)
		(*v)++;
}

/* Device, namespace, length and the L3/L4 summary of skb into e. On receive
 * the MAC header has been pulled, so L3 starts at skb->data; on transmit (and
 * at the end of a path) the network header offset is the one to trust. */
static __always_inline void parse(struct kdbg_path_event *e, __u64 skb, int rx)
{
	__u64 dev, head, data, net = 0;
	__u16 nh = 0xffff, th = 0xffff, proto_be = 0;

	dev = read_ptr(skb, SKB_DEV);
	if (dev) {
		bpf_probe_read_kernel(&e->ifindex, sizeof(e->ifindex), (void *)(dev + DEV_IFINDEX));
		bpf_probe_read_kernel(&e->ifname, sizeof(e->ifname), (void *)(dev + DEV_NAME));
		net = read_ptr(dev, DEV_NET);
	} else {
		/* Queued to a socket, the skb has lost its device but not its owner. */
		net = read_ptr(read_ptr(skb, SKB_SK), SK_NET);
	}
	if (net)
		bpf_probe_read_kernel(&e->netns, sizeof(e->netns), (void *)(net + NET_INUM));
	bpf_probe_read_kernel(&e->len, sizeof(e->len), (void *)(skb + SKB_LEN));
	bpf_probe_read_kernel(&proto_be, sizeof(proto_be), (void *)(skb + SKB_PROTOCOL));
	e->protocol = __builtin_bswap16(proto_be);
	head = read_ptr(skb, SKB_HEAD);
	if (rx) {
		data = read_ptr(skb, SKB_DATA);
		if (data >= head && data - head < 0xffff)
			nh = data - head;
	} else {
		bpf_probe_read_kernel(&nh, sizeof(nh), (void *)(skb + SKB_NETWORK_HDR));
	}
	bpf_probe_read_kernel(&th, sizeof(th), (void *)(skb + SKB_TRANSPORT_HDR));
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

/* 1 when the parsed packet passes every filter: the statements below return 0. */
static __always_inline int wanted(struct kdbg_path_event *e)
{
	{
		__u32 netns = e->netns;
		char *ifname = e->ifname;
		/* filters on netns and device */
		{{FILTER_DEV}}
	}
	{
		__u8 family = e->family, l4proto = e->l4proto, l4_valid = e->l4_valid;
		__u16 sport = e->sport, dport = e->dport;
		__u8 has_ports = l4_valid && (l4proto == 6 || l4proto == 17 || l4proto == 132);
		__u32 s[4], d[4];
		__builtin_memcpy(s, e->saddr, 16);
		__builtin_memcpy(d, e->daddr, 16);
		/* filters on the packet */
		{{FILTER_PKT}}
	}
	return 1;
}

static __always_inline void emit(struct kdbg_path_event *e)
{
	e->cpu = bpf_get_smp_processor_id();
	if (events.ringbuf_output(e, sizeof(*e), 0) != 0)
		count(KDBG_PATH_CTR_LOST);
}

static __always_inline int hop(__u64 skb, __u8 tp, int rx)
{
	struct kdbg_path_event e = {};
	struct kdbg_path_track *t, fresh = {};
	__u64 now = bpf_ktime_get_ns();

	if (!skb)
		return 0;
	parse(&e, skb, rx);
	t = tracked.lookup(&skb);
	if (t && now - t->last_ns > IDLE_NS) {
		tracked.delete(&skb);
		t = 0;
	}
	if (!t) {
		if (!wanted(&e))
			return 0;
		fresh.first_ns = now;
		fresh.last_ns = now;
		if (tracked.update(&skb, &fresh) != 0) {
			count(KDBG_PATH_CTR_TRACK_FULL);
			return 0;
		}
		count(KDBG_PATH_CTR_PACKETS);
		e.first_ns = now;
	} else {
		e.first_ns = t->first_ns;
		t->last_ns = now;
	}
	e.time_ns = now;
	e.skbaddr = skb;
	e.tp = tp;
	emit(&e);
	return 0;
}

static __always_inline int end(__u64 skb, __u8 tp, __u64 location, __u32 reason)
{
	struct kdbg_path_event e = {};
	struct kdbg_path_track *t;

	if (!skb)
		return 0;
	t = tracked.lookup(&skb);
	if (!t)
		return 0;
	e.first_ns = t->first_ns;
	tracked.delete(&skb);
	parse(&e, skb, 0);
	e.time_ns = bpf_ktime_get_ns();
	e.skbaddr = skb;
	e.tp = tp;
	e.location = location;
	e.reason = reason;
	count(KDBG_PATH_CTR_ENDS);
	emit(&e);
	return 0;
}

#define KDBG_HOP(name, off, tp, rx)						\
int kdbg_path_##name(void *ctx)						\
{									\
	__u64 skb = 0;							\
	bpf_probe_read_kernel(&skb, sizeof(skb), ctx + (off));		\
	return hop(skb, tp, rx);					\
}

/* One line per hop tracepoint this kernel has. */
{{HOP_HOOKS}}

int kdbg_path_kfree_skb(void *ctx)
{
	__u64 skb = 0, loc = 0;
	__u32 reason = 0;

	bpf_probe_read_kernel(&skb, sizeof(skb), ctx + TP_KFREE_SKBADDR);
	bpf_probe_read_kernel(&loc, sizeof(loc), ctx + TP_KFREE_LOCATION);
#if TP_KFREE_REASON >= 0
	bpf_probe_read_kernel(&reason, sizeof(reason), ctx + TP_KFREE_REASON);
#endif
	return end(skb, KDBG_TP_KFREE_SKB, loc, reason);
}

int kdbg_path_consume_skb(void *ctx)
{
	__u64 skb = 0, loc = 0;

	bpf_probe_read_kernel(&skb, sizeof(skb), ctx + TP_CONSUME_SKBADDR);
#if TP_CONSUME_LOCATION >= 0
	bpf_probe_read_kernel(&loc, sizeof(loc), ctx + TP_CONSUME_LOCATION);
#endif
	return end(skb, KDBG_TP_CONSUME_SKB, loc, 0);
}
