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

#define TP_KFREE_SKBADDR   8
#define TP_KFREE_LOCATION  16
#define TP_KFREE_REASON    36
#define TP_CONSUME_SKBADDR 8
#define TP_CONSUME_LOCATION 16	/* -1: no location field */

#define SKB_DEV          16
#define SKB_SK           24
#define SKB_HEAD         192
#define SKB_DATA         200
#define SKB_PROTOCOL     176
#define SKB_NETWORK_HDR  180
#define SKB_TRANSPORT_HDR 178
#define SKB_LEN          112
#define DEV_IFINDEX      224
#define DEV_NAME         280
#define DEV_NET          264	/* -1: no network namespaces */
#define SK_NET           48	/* -1: no network namespaces */
#define NET_INUM         176

/* A tracked skb with no hop for this long is looked at afresh: its memory may
 * hold a new packet, the old one freed without a tracepoint (__kfree_skb). */
#define IDLE_NS          1000000000ULL

BPF_RINGBUF_OUTPUT(events, 256);
BPF_TABLE("lru_hash", __u64, struct kdbg_path_track, tracked, 65536);
BPF_PERCPU_ARRAY(counters, __u64, KDBG_PATH_NR_CTRS);

static __always_inline void count(int slot)
{
	__u64 *v = counters.lookup(&slot);
	if (v)
		(*v)++;
}

/* The hop parser kdbg path shares with the journey. */
#include "kdbg_hop.h"

/* Device, namespace, length and the L3/L4 summary of skb into e. */
static __always_inline void parse(struct kdbg_path_event *e, __u64 skb, int rx)
{
	kdbg_hop_dev(&e->seen, skb, read_ptr(skb, SKB_DEV));
	kdbg_hop_packet(&e->seen, skb, rx);
}

/* 1 when the parsed packet passes every filter: the statements below return 0. */
static __always_inline int wanted(struct kdbg_path_event *e)
{
	{
		__u32 netns = e->seen.netns;
		char *ifname = e->seen.ifname;
		/* filters on netns and device */
		if (netns != 4026532177U) return 0;
		if (ifname[0] != 118 || ifname[1] != 101 || ifname[2] != 116 || ifname[3] != 104 || ifname[4] != 45 || ifname[5] != 97 || ifname[6] != 0) return 0;
	}
	{
		KDBG_PACKET_FILTER_LOCALS(&e->seen);
		/* filters on the packet */
		if (!(l4proto == 1 && family == 4)) return 0;
		if (!(((family == 4 || family == 3) && (s[0] & 0xffffffff) == 0x02054d0a) || ((family == 4 || family == 3) && (d[0] & 0xffffffff) == 0x02054d0a))) return 0;
		if (!(l4_valid && (l4proto == 1 || l4proto == 58) && (sport == 4242))) return 0;
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
KDBG_HOP(net_dev_queue, 8, 1, 0)
KDBG_HOP(netif_rx, 8, 2, 1)
KDBG_HOP(netif_receive_skb, 8, 3, 1)
KDBG_HOP(netif_receive_skb_entry, 24, 4, 1)
KDBG_HOP(napi_gro_receive_entry, 24, 5, 1)

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
