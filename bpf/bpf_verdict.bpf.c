/* kdbg BPF-program drops: fexit programs on XDP and tc programs (kdbg watch --bpf).
 *
 * Loaded once per traced program (BPF_PROG_TYPE_TRACING, expected attach type
 * BPF_TRACE_FEXIT, attach_prog_fd the traced program): it runs after the traced
 * program returns, with ctx[0] its context (an XDP program's xdp_buff, a tc program's
 * sk_buff) and ctx[1] its verdict. A verdict that drops (XDP_WANTED, TC_WANTED) is
 * reported as a struct kdbg_drop_event: reason is the verdict, location the traced
 * program's JITed entry (bpf_get_func_ip), skbaddr the xdp_buff or skb, and the
 * packet read from its data (for tc, the skb's linear part: at ingress cls_bpf has
 * pushed the MAC header back before the program runs, so data is the frame there too).
 *
 * kdbg_on_xdp_exception, on the xdp:xdp_exception tracepoint (tp_btf), reports the
 * XDP_ABORTED of a program kdbg could not fexit (no BTF, say): its programs' entries
 * are in the map traced, filled from user space, and skipped there, since fexit's
 * record of the same packet comes with the packet. Such a record has no packet
 * (skbaddr 0, len 0), location the program's JITed entry, and chain KDBG_VIA_EXCEPTION.
 *
 * While user space keeps up, each matching verdict is a record in the ring buffer. When
 * it falls behind and the ring is full, a verdict is counted per key instead, in the
 * per-CPU tables more (program, verdict, device, packet) and, once that is full,
 * more_coarse (without the packet): kdbg's "... and N more like this" lines
 * (kdbg/trace/more.py), as the drop program does (bpf/kfree_skb.bpf.c).
 *
 * A template: kdbg/trace/bpfverdict.py fills every double-braced name; struct offsets
 * come from the running kernel's BTF.
 */
#include "drop_event.h"
#include "kdbg_read.h"

#define XDP_DATA         {{XDP_DATA}}
#define XDP_DATA_END     {{XDP_DATA_END}}
#define XDP_RXQ          {{XDP_RXQ}}
#define RXQ_DEV          {{RXQ_DEV}}
#define DEV_IFINDEX      {{DEV_IFINDEX}}
#define DEV_NAME         {{DEV_NAME}}
#define DEV_NET          {{DEV_NET}}	/* -1: no network namespaces */
#define NET_INUM         {{NET_INUM}}
#define SKB_DATA         {{SKB_DATA}}
#define SKB_LEN          {{SKB_LEN}}
#define SKB_DATA_LEN     {{SKB_DATA_LEN}}
#define SKB_DEV          {{SKB_DEV}}
#define XDP_WANTED(v)    ({{XDP_WANTED}})
#define TC_WANTED(v)     ({{TC_WANTED}})
#define PROG_BPF_FUNC    {{PROG_BPF_FUNC}}
#define DEV_XDP_STATE    {{DEV_XDP_STATE}}	/* -1: no net_device.xdp_state */
#define XDP_ENTITY_SIZE  {{XDP_ENTITY_SIZE}}
#define SKB_INGRESS_BIT  {{SKB_INGRESS_BIT}}	/* -1: no sk_buff.tc_at_ingress */
/* The record's chain field, for a verdict: how it was seen and where the program runs. */
#define KDBG_VIA_EXCEPTION 1
#define KDBG_AT_INGRESS    2
#define KDBG_AT_EGRESS     4
#define KDBG_XDP_GENERIC   8
#define KDBG_XDP_DRIVER    16
/* 1: matching verdicts are counted per (program, verdict) in stats, not sent (--stats) */
#define KDBG_STATS       {{STATS}}

BPF_RINGBUF_OUTPUT(events, {{RINGBUF_PAGES}});
BPF_PERCPU_ARRAY(counters, __u64, KDBG_NR_CTRS);
BPF_PERCPU_HASH(stats, struct kdbg_stats_key, __u64, 4096);
#if !KDBG_STATS
BPF_PERCPU_HASH(more, struct kdbg_more_key, __u64, {{MORE_ENTRIES}});
BPF_PERCPU_HASH(more_coarse, struct kdbg_more_key, __u64, 1024);
#endif
/* JITed entries of the programs fexit traces (1), and of those --prog leaves out (2):
 * xdp:xdp_exception reports neither */
BPF_HASH(traced, __u64, __u8, 4096);

static __always_inline void count(int slot)
{
	__u64 *v = counters.lookup(&slot);
	if (v)
		(*v)++;
}

#if !KDBG_STATS
/* The ring buffer has no room for the verdict: count it per key instead (per packet
 * while the table has room, else per program, verdict and device); lost only if both
 * tables are full. */
static __always_inline void ring_full(struct kdbg_more_key *key)
{
	__u64 zero = 0, *n = more.lookup_or_try_init(key, &zero);

	if (!n) {
		key->coarse = 1;
		key->family = key->l4proto = key->l4_valid = 0;
		key->sport = key->dport = 0;
		__builtin_memset(key->saddr, 0, 16);
		__builtin_memset(key->daddr, 0, 16);
		n = more_coarse.lookup_or_try_init(key, &zero);
	}
	if (n)
		(*n)++;
	else
		count(KDBG_CTR_LOST);
}
#endif

static __always_inline int report(void *ctx, __u64 obj, __u64 verdict, __u64 dev,
				  __u64 data, __u64 data_end, __u64 prog, __u8 flags)
{
	__u64 net, raw = 0;
	__u32 netns = 0, s[4] = {}, d[4] = {};
	__s32 ifindex = 0;
	__u16 proto = 0, sport = 0, dport = 0;
	__u8 family = 0, l4proto = 0, has_ports = 0, eth[18] = {}, hdr[48] = {};
	char ifname[KDBG_IFNAMSIZ] = {};
	int l3 = 14, have_raw = 0;
#if !KDBG_STATS
	struct kdbg_drop_event *e;
#endif

	count(KDBG_CTR_SEEN);
	if (dev) {
		bpf_probe_read_kernel_str(ifname, sizeof(ifname), (void *)(dev + DEV_NAME));
		bpf_probe_read_kernel(&ifindex, sizeof(ifindex), (void *)(dev + DEV_IFINDEX));
		net = read_ptr(dev, DEV_NET);
		if (net)
			bpf_probe_read_kernel(&netns, sizeof(netns), (void *)(net + NET_INUM));
	}
	{{DEV_FILTER}}
	if (data && data_end >= data + 14) {
		bpf_probe_read_kernel(eth, sizeof(eth), (void *)data);
		proto = (eth[12] << 8) | eth[13];
		if (proto == 0x8100 || proto == 0x88a8) {	/* one VLAN tag */
			proto = (eth[16] << 8) | eth[17];
			l3 = 18;
		}
		bpf_probe_read_kernel(hdr, sizeof(hdr), (void *)(data + l3));
	}
	if (data_end >= data + l3 + 20 && proto == 0x0800 && (hdr[0] >> 4) == 4) {
		family = 4;
		l4proto = hdr[9];
		__builtin_memcpy(&s[0], &hdr[12], 4);
		__builtin_memcpy(&d[0], &hdr[16], 4);
		if ((hdr[0] & 0x0f) == 5 && ((hdr[6] & 0x1f) | hdr[7]) == 0
		    && data_end >= data + l3 + 28) {
			__builtin_memcpy(&raw, &hdr[20], 8);
			have_raw = 1;
		}
	} else if (data_end >= data + l3 + 48 && proto == 0x86dd) {
		family = 6;
		l4proto = hdr[6];
		__builtin_memcpy(s, &hdr[8], 16);
		__builtin_memcpy(d, &hdr[24], 16);
		__builtin_memcpy(&raw, &hdr[40], 8);
		have_raw = 1;
	}
	if (have_raw && (l4proto == 6 || l4proto == 17 || l4proto == 132)) {
		__u16 w0 = raw, w1 = raw >> 16;
		sport = __builtin_bswap16(w0);
		dport = __builtin_bswap16(w1);
		has_ports = 1;
	}
	{{PACKET_FILTER}}
	count(KDBG_CTR_MATCHED);
#if KDBG_STATS
	{
		struct kdbg_stats_key key = {.location = prog, .reason = verdict};
		__u64 zero = 0, *v = stats.lookup_or_try_init(&key, &zero);

		if (v)
			(*v)++;
		else
			count(KDBG_CTR_LOST);
	}
#else
	e = events.ringbuf_reserve(sizeof(struct kdbg_drop_event));
	if (!e) {
		struct kdbg_more_key key = {
			.location = prog, .reason = verdict, .netns = netns, .ifindex = ifindex,
			.family = family, .l4proto = l4proto, .l4_valid = has_ports,
			.sport = sport, .dport = dport, .chain = flags,
		};

		__builtin_memcpy(key.saddr, s, 16);
		__builtin_memcpy(key.daddr, d, 16);
		__builtin_memcpy(key.ifname, ifname, sizeof(ifname));
		ring_full(&key);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->time_ns = bpf_ktime_get_ns();
	e->skbaddr = obj;
	e->location = prog;
	e->chain = flags;
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	e->tid = (__u32)bpf_get_current_pid_tgid();
	e->cpu = bpf_get_smp_processor_id();
	e->reason = verdict;
	e->netns = netns;
	e->ifindex = ifindex;
	e->len = data_end > data ? data_end - data : 0;
	e->stack_id = -1;
	e->protocol = proto;
	e->family = family;
	e->l4proto = l4proto;
	e->sport = sport;
	e->dport = dport;
	e->l4_valid = has_ports;
	__builtin_memcpy(e->saddr, s, 16);
	__builtin_memcpy(e->daddr, d, 16);
	__builtin_memcpy(e->ifname, ifname, sizeof(ifname));
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	events.ringbuf_submit(e, {{SUBMIT_FLAGS}});
#endif
	return 0;
}

/* Which of dev's XDP hooks holds the program at entry: xdp_state[XDP_MODE_SKB] is
 * generic XDP, [XDP_MODE_DRV] the driver's; 0 when neither (a devmap or cpumap
 * program, one run by a dispatcher). */
static __always_inline __u8 xdp_mode(__u64 dev, __u64 entry)
{
	if (DEV_XDP_STATE < 0 || !dev)
		return 0;
	if (read_ptr(read_ptr(dev, DEV_XDP_STATE), PROG_BPF_FUNC) == entry)
		return KDBG_XDP_GENERIC;
	if (read_ptr(read_ptr(dev, DEV_XDP_STATE + XDP_ENTITY_SIZE), PROG_BPF_FUNC) == entry)
		return KDBG_XDP_DRIVER;
	return 0;
}

int kdbg_on_xdp_exit(unsigned long long *ctx)
{
	__u64 xdp = ctx[0], verdict = ctx[1], dev, entry;

	if (!(XDP_WANTED(verdict)))
		return 0;
	dev = read_ptr(read_ptr(xdp, XDP_RXQ), RXQ_DEV);
	entry = bpf_get_func_ip(ctx);
	return report(ctx, xdp, verdict, dev, read_ptr(xdp, XDP_DATA), read_ptr(xdp, XDP_DATA_END),
		      entry, xdp_mode(dev, entry));
}

/* xdp:xdp_exception(const struct net_device *dev, const struct bpf_prog *xdp, u32 act) */
int kdbg_on_xdp_exception(unsigned long long *ctx)
{
	__u64 dev = ctx[0], entry = read_ptr(ctx[1], PROG_BPF_FUNC);
	__u32 act = ctx[2];

	if (act != 0 || !(XDP_WANTED(act)) || traced.lookup(&entry))
		return 0;	/* not XDP_ABORTED, or fexit reports it with its packet */
	return report(ctx, 0, act, dev, 0, 0, entry, KDBG_VIA_EXCEPTION | xdp_mode(dev, entry));
}

int kdbg_on_tc_exit(unsigned long long *ctx)
{
	__u64 skb = ctx[0], verdict = ctx[1], data;
	__u32 len = 0, data_len = 0;
	__u8 flags = 0, bits = 0;

	if (!(TC_WANTED((int)verdict)))
		return 0;
	if (SKB_INGRESS_BIT >= 0) {
		bpf_probe_read_kernel(&bits, 1, (void *)(skb + SKB_INGRESS_BIT / 8));
		flags = (bits >> (SKB_INGRESS_BIT % 8)) & 1 ? KDBG_AT_INGRESS : KDBG_AT_EGRESS;
	}
	bpf_probe_read_kernel(&len, sizeof(len), (void *)(skb + SKB_LEN));
	bpf_probe_read_kernel(&data_len, sizeof(data_len), (void *)(skb + SKB_DATA_LEN));
	data = read_ptr(skb, SKB_DATA);
	return report(ctx, skb, verdict, read_ptr(skb, SKB_DEV), data,
		      data + (len > data_len ? len - data_len : 0), bpf_get_func_ip(ctx), flags);
}
