/* kdbg drop tracer: runs on the kfree_skb tracepoint, as a BTF-typed raw tracepoint
 * (tp_btf): the kernel hands it the tracepoint's arguments, and struct fields are
 * plain loads the verifier checks against the kernel's BTF (no helper call per read).
 *
 * A template: kdbg/trace/program.py fills every double-braced name and refuses to
 * load text with one left. The arguments' positions come from the kernel's BTF
 * (btf_trace_kfree_skb); struct offsets (sk_buff, net_device, sock, net) come from
 * the running kernel's BTF, never from the headers bcc compiles against.
 */
#include "drop_event.h"
#include "drop_record.h"
#include "kdbg_read.h"

#define ARG_SKB          {{ARG_SKB}}
#define ARG_LOCATION     {{ARG_LOCATION}}
#define ARG_REASON       {{ARG_REASON}}
#define ARG_RX_SK        {{ARG_RX_SK}}	/* -1: no rx_sk argument (before 6.11) */

#define SKB_DEV          {{SKB_DEV}}
#define SKB_SK           {{SKB_SK}}
#define SKB_HEAD         {{SKB_HEAD}}
#define SKB_NETWORK_HDR  {{SKB_NETWORK_HDR}}
#define SKB_TRANSPORT_HDR {{SKB_TRANSPORT_HDR}}
#define SKB_LEN          {{SKB_LEN}}
#define SKB_PROTOCOL     {{SKB_PROTOCOL}}
#define SKB_MARK         {{SKB_MARK}}
#define SKB_NFCT         {{SKB_NFCT}}	/* -1: no conntrack in this kernel */
/* In struct nf_conn, when vmlinux's BTF has it (-1 when conntrack is a module, or
 * without CONFIG_NF_CONNTRACK_ZONES / _MARK: then neither is read). */
#define CT_ZONE_ID       {{CT_ZONE_ID}}
#define CT_MARK          {{CT_MARK}}
#define CT_STATUS        {{CT_STATUS}}	/* nf_conn.status, on the same terms */
/* the original tuple: nf_conn.tuplehash, nf_conntrack_tuple_hash.tuple, and where
 * struct nf_conntrack_tuple keeps dst, dst.protonum and dst.dir (read only when it is
 * laid out as drop_event.h's copy of it: 20, 38, 39) */
#define CT_TUPLEHASH     {{CT_TUPLEHASH}}
#define CT_HASH_TUPLE    {{CT_HASH_TUPLE}}
#define CT_TUPLE_DST     {{CT_TUPLE_DST}}
#define CT_TUPLE_PROTONUM {{CT_TUPLE_PROTONUM}}
#define CT_TUPLE_DIR     {{CT_TUPLE_DIR}}
/* sizeof(struct nf_conntrack_tuple_hash): the reply direction's is tuplehash[1] */
#define CT_HASH_SIZE     {{CT_HASH_SIZE}}
/* 0: neither the mark nor the conntrack state is read (bench/drop_storm.py measures
 * their cost against it; kdbg itself always reads them) */
#define CT_READS         {{CT_READS}}
/* >0: zone.id, mark, status and both tuples lie within these CT_SPAN_LEN bytes of
 * struct nf_conn from CT_SPAN_START (8-byte aligned), read with one helper call into
 * the per-CPU ct_span buffer (kdbg/trace/program.py: ct_span); 0: one call each. */
#define CT_SPAN_START    {{CT_SPAN_START}}
#define CT_SPAN_LEN      {{CT_SPAN_LEN}}
#define DEV_IFINDEX      {{DEV_IFINDEX}}
#define DEV_NAME         {{DEV_NAME}}
#define DEV_NET          {{DEV_NET}}	/* -1: no network namespaces */
#define SK_NET           {{SK_NET}}
#define NET_INUM         {{NET_INUM}}

#define WANT_STACK       {{WANT_STACK}}
/* With WANT_STACK: whether a drop of this reason has its stack taken: every drop (1),
 * or only the reasons whose causes read it (kdbg/causes/registry.py: NETFILTER_DROP's,
 * for the hook; a stack walk costs every other drop for nothing). */
#define STACK_WANTED(reason) ({{STACK_WANTED}})
/* 1: a wanted stack is first looked for among the learned call chains (struct
 * kdbg_chain); only a drop no chain matches has its stack walked. */
#define CHAINS           {{CHAINS}}
/* 1: the stack is walked for a drop a chain matched too (kernel tests compare both). */
#define CHAIN_CHECK      {{CHAIN_CHECK}}
#define STATS_ONLY       {{STATS_ONLY}}
/* 1: no filter looks past reason and location, so --stats reads nothing more. */
#define COUNT_EARLY      {{COUNT_EARLY}}
/* 1: a filter on netns or device, so the device is read before the packet. */
#define DEV_FILTER       {{DEV_FILTER}}
/* 1: matching drops are counted per key in the stats table (--stats, the recorder, the
 * exporter); 0: only their number (KDBG_CTR_MATCHED). */
#define COUNT_STATS      {{COUNT_STATS}}
/* 1: the stats key carries netns and ifname too (kdbg exporter's labels). */
#define STATS_BY_DEV     {{STATS_BY_DEV}}
/* 1: a drop the full ring buffer has no room for is counted per key in `more`. */
#define SUMMARIZE        {{SUMMARIZE}}

/* The field of type T at byte offset OFF of BASE (a BTF-typed kernel pointer); 0 when
 * the kernel has no such field (a negative offset). */
#define FIELD(T, base, off) ((off) >= 0 ? *(T *)((void *)(base) + (off)) : (T)0)

BPF_RINGBUF_OUTPUT(events, {{RINGBUF_PAGES}});
/* Per-CPU counts: no atomic operations and no shared cache lines under a storm. */
#if COUNT_STATS
BPF_PERCPU_HASH(stats, struct kdbg_stats_key, __u64, {{STATS_ENTRIES}});
BPF_PERCPU_ARRAY(tally, struct kdbg_tally, KDBG_TALLY_SLOTS);
#endif
BPF_PERCPU_ARRAY(counters, __u64, KDBG_NR_CTRS);
#if WANT_STACK
BPF_STACK_TRACE(stacks, {{STACK_ENTRIES}});
#endif
#if SUMMARIZE
BPF_PERCPU_HASH(more, struct kdbg_more_key, __u64, {{MORE_ENTRIES}});
BPF_PERCPU_HASH(more_coarse, struct kdbg_more_key, __u64, 1024);
#endif
#if CHAINS
BPF_HASH(chains, __u64, struct kdbg_chains, {{CHAIN_ENTRIES}});
BPF_HASH(learn_next, __u64, __u64, {{CHAIN_ENTRIES}});	/* location -> when it may ask again */
BPF_RINGBUF_OUTPUT(learn, 64);
struct kdbg_scratch { __u64 fp; __u64 w[KDBG_CHAIN_SPAN / 8]; };
BPF_PERCPU_ARRAY(scratch, struct kdbg_scratch, 1);
#define LEARN_GAP_NS 5000000ULL	/* one stack per location for user space every 5 ms */
#endif

#if SKB_NFCT >= 0 && CT_READS && CT_SPAN_LEN > 0
struct kdbg_ct_span { __u64 w[CT_SPAN_LEN / 8]; };
BPF_PERCPU_ARRAY(ct_span, struct kdbg_ct_span, 1);
/* where field OFF of struct nf_conn lies in the span just read */
#define CT_IN_SPAN(c, off) ((void *)(c)->w + (off) - CT_SPAN_START)
#endif

static __always_inline void count(int slot)
{
	__u64 *v = counters.lookup(&slot);
	if (v)
		(*v)++;
}

#if COUNT_STATS
/* Add ``n`` drops of ``key`` to the stats table (or to KDBG_CTR_STATS_FULL). */
static __always_inline void add_stats(const struct kdbg_stats_key *key, __u64 n)
{
	__u64 zero = 0, *v = stats.lookup_or_try_init(key, &zero);

	if (v) {
		*v += n;
	} else {
		int slot = KDBG_CTR_STATS_FULL;
		__u64 *full = counters.lookup(&slot);
		if (full)
			*full += n;
	}
}

static __always_inline int same_key(const struct kdbg_stats_key *a,
				    const struct kdbg_stats_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}
#endif

static __always_inline void count_match(__u32 reason, __u64 location,
					const struct kdbg_drop_event *e)
{
#if COUNT_STATS
	struct kdbg_stats_key key = {.location = location, .reason = reason};
	__u32 slot = reason & (KDBG_TALLY_SLOTS - 1);
	struct kdbg_tally *t = tally.lookup(&slot);

#if STATS_BY_DEV
	key.netns = e->netns;
	__builtin_memcpy(key.ifname, e->ifname, sizeof(key.ifname));
#endif
	if (!t) {
		add_stats(&key, 1);
		return;
	}
	if (t->count && same_key(&t->key, &key)) {
		t->count++;
		return;
	}
	if (t->count)
		add_stats(&t->key, t->count);
	t->key = key;
	t->count = 1;
#else
	count(KDBG_CTR_MATCHED);
#endif
}

static __always_inline __u32 netns_of(__u64 net)
{
	return net ? FIELD(__u32, net, NET_INUM) : 0;
}

static __always_inline void read_dev(__u64 *ctx, __u64 skb, struct kdbg_drop_event *e)
{
	__u64 dev = FIELD(__u64, skb, SKB_DEV), sk;

	if (dev) {
		e->ifindex = FIELD(__s32, dev, DEV_IFINDEX);
		*(__u64 *)&e->ifname[0] = FIELD(__u64, dev, DEV_NAME);
		*(__u64 *)&e->ifname[8] = FIELD(__u64, dev, DEV_NAME + 8);
		e->netns = netns_of(FIELD(__u64, dev, DEV_NET));
	}
	if (!e->netns) {
		sk = FIELD(__u64, skb, SKB_SK);
#if ARG_RX_SK >= 0
		if (!sk)
			sk = ctx[ARG_RX_SK];
#endif
		if (sk)
			e->netns = netns_of(FIELD(__u64, sk, SK_NET));
	}
}

/* The packet's addresses, protocol and ports (or ICMP type and code). */
static __always_inline void read_packet(__u64 skb, struct kdbg_drop_event *e, __u64 head,
					__u16 nh)
{
	__u8 first = 0;
	__u64 l4 = 0, raw = 0;
	int have_raw = 0;
	__u16 th;

	if (e->protocol == 0)
		bpf_probe_read_kernel(&first, 1, (void *)(head + nh));
	if (e->protocol == 0x0800 || (e->protocol == 0 && (first >> 4) == 4)) {
		/* The IPv4 header and, when it has no options, the first 8 bytes
		 * of L4 in one read. */
		__u8 iph[28] = {};
		bpf_probe_read_kernel(iph, sizeof(iph), (void *)(head + nh));
		if ((iph[0] >> 4) == 4) {
			e->family = 4;
			e->l4proto = iph[9];
			__builtin_memcpy(e->saddr, &iph[12], 4);
			__builtin_memcpy(e->daddr, &iph[16], 4);
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
	} else if (e->protocol == 0x86DD || (e->protocol == 0 && (first >> 4) == 6)) {
		__u8 ip6h[48] = {};
		bpf_probe_read_kernel(ip6h, sizeof(ip6h), (void *)(head + nh));
		if ((ip6h[0] >> 4) == 6) {
			e->family = 6;
			e->l4proto = ip6h[6];
			__builtin_memcpy(e->saddr, &ip6h[8], 16);
			__builtin_memcpy(e->daddr, &ip6h[24], 16);
			if (e->l4proto == 6 || e->l4proto == 17 || e->l4proto == 58) {
				__builtin_memcpy(&raw, &ip6h[40], 8);
				have_raw = 1;
			} else {
				/* Extension headers: trust the transport header if set. */
				th = FIELD(__u16, skb, SKB_TRANSPORT_HDR);
				if (th != 0xffff && th > nh)
					l4 = head + th;
			}
		}
	} else if (e->protocol == 0x0806) {
		/* ARP for IPv4 over Ethernet, the kind whose addresses the arp family's
		 * rules read: the operation, the sender's and the target's address. */
		__u8 arp[28] = {};
		bpf_probe_read_kernel(arp, sizeof(arp), (void *)(head + nh));
		if (arp[0] == 0 && arp[1] == 1 && arp[2] == 0x08 && arp[3] == 0 &&
		    arp[4] == 6 && arp[5] == 4) {
			e->family = 3;
			e->sport = ((__u16)arp[6] << 8) | arp[7];
			__builtin_memcpy(e->saddr, &arp[14], 4);
			__builtin_memcpy(e->daddr, &arp[24], 4);
		}
	}
	if (!have_raw && l4)
		have_raw = bpf_probe_read_kernel(&raw, sizeof(raw), (void *)l4) == 0;
	if (have_raw)
		KDBG_L4_FIELDS(e, raw);
}

/* The ring buffer has no room for the drop: count it per key instead (per packet while
 * the table has room, else per reason, location and device); lost only if both are
 * full, or when the program counts nothing per key. */
static __always_inline void ring_full(const struct kdbg_drop_event *e)
{
#if SUMMARIZE
	struct kdbg_more_key key = {
		.location = e->location, .reason = e->reason, .netns = e->netns,
		.ifindex = e->ifindex, .family = e->family, .l4proto = e->l4proto,
		.l4_valid = e->l4_valid, .sport = e->sport, .dport = e->dport,
		.icmp_type = e->icmp_type, .icmp_code = e->icmp_code,
	};
	__u64 zero = 0, *n;

	__builtin_memcpy(key.saddr, e->saddr, 16);
	__builtin_memcpy(key.daddr, e->daddr, 16);
	__builtin_memcpy(key.ifname, e->ifname, sizeof(key.ifname));
	n = more.lookup_or_try_init(&key, &zero);
	if (!n) {
		key.coarse = 1;
		key.family = key.l4proto = key.l4_valid = key.icmp_type = key.icmp_code = 0;
		key.sport = key.dport = 0;
		__builtin_memset(key.saddr, 0, 16);
		__builtin_memset(key.daddr, 0, 16);
		n = more_coarse.lookup_or_try_init(&key, &zero);
	}
	if (n)
		(*n)++;
	else
		count(KDBG_CTR_LOST);
#else
	count(KDBG_CTR_LOST);
#endif
}

#if CHAINS
/* The program's frame pointer, as a number: every chain slot's offset is from it. */
static __always_inline __u64 frame_pointer(struct kdbg_scratch *s)
{
	__u64 fp;

	asm volatile("%0 = r10" : "=r"(fp));
	s->fp = fp;	/* through memory: a number to the verifier, not a stack pointer */
	return *(volatile __u64 *)&s->fp;
}

/* The id of the learned chain this drop's stack holds, 0 when none does. */
static __always_inline __u8 chain_of(__u64 location, __u64 fp, struct kdbg_scratch *s)
{
	struct kdbg_chains *cs = chains.lookup(&location);
	__u32 span;

	if (!cs)
		return 0;
	span = cs->span & (KDBG_CHAIN_SPAN - 1);	/* user space keeps it below 2048 */
	if (!span)
		return 0;
	if (bpf_probe_read_kernel(s->w, span, (void *)fp))
		return 0;
	for (int c = 0; c < KDBG_CHAINS_PER_SITE; c++) {
		struct kdbg_chain *ch = &cs->c[c];
		int ok = ch->id != 0;

		for (int i = 0; ok && i < KDBG_CHAIN_SLOTS; i++) {
			if (i >= ch->nslots)
				break;
			ok = s->w[(ch->off[i] / 8) & (KDBG_CHAIN_SPAN / 8 - 1)] == ch->ret[i];
		}
		if (ok)
			return ch->id;
	}
	return 0;
}

/* No chain matched: hand user space this drop's stack to learn one from (once per
 * location every LEARN_GAP_NS, or later when user space says so). The pages are read
 * up to the first that is not mapped: the guard page past the end of the stack. */
static __always_inline void learn_from(__u64 *ctx, __u64 location, __u32 reason, __u64 fp)
{
	__u64 now = bpf_ktime_get_ns(), *next = learn_next.lookup(&location), then;
	struct kdbg_learn *r;
	__u64 page = fp & ~(__u64)(KDBG_PAGE - 1), first = fp & (KDBG_PAGE - 1);

	if (next && now < *next)
		return;
	then = now + LEARN_GAP_NS;
	learn_next.update(&location, &then);
	r = learn.ringbuf_reserve(sizeof(*r));
	if (!r)
		return;
	r->fp = fp;
	r->location = location;
	r->reason = reason;
	r->frames_bytes = bpf_get_stack(ctx, r->frames, sizeof(r->frames), 0);
	r->pages = 0;
	if (bpf_probe_read_kernel(&r->stack[first], KDBG_PAGE - first, (void *)fp) == 0) {
		r->pages = 1;
		for (int i = 1; i < KDBG_LEARN_PAGES; i++) {
			if (bpf_probe_read_kernel(&r->stack[i * KDBG_PAGE], KDBG_PAGE,
						  (void *)(page + i * KDBG_PAGE)))
				break;
			r->pages = i + 1;
		}
	}
	learn.ringbuf_submit(r, 0);
}
#endif

/* What only a drop that is sent needs: when, where, who, and its stack or chain. */
static __always_inline void fill_sent(__u64 *ctx, struct kdbg_drop_event *e)
{
	__u64 id = bpf_get_current_pid_tgid();

	e->time_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->tgid = id >> 32;
	e->tid = (__u32)id;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	e->stack_id = -1;
#if WANT_STACK
	if (STACK_WANTED(e->reason)) {
#if CHAINS
		int zero = 0;
		struct kdbg_scratch *s = scratch.lookup(&zero);
		__u64 fp;

		if (s) {
			fp = frame_pointer(s);
			e->chain = chain_of(e->location, fp, s);
			if (!e->chain)
				learn_from(ctx, e->location, e->reason, fp);
		}
		if (!e->chain || CHAIN_CHECK)
			e->stack_id = stacks.get_stackid(ctx, 0);
#else
		e->stack_id = stacks.get_stackid(ctx, BPF_F_REUSE_STACKID);
#endif
	}
#endif
}

/* A packet's journey (kdbg watch --journey, --break): the maps and hop programs of
 * bpf/journey.bpf.c, or nothing. */
{{JOURNEY}}
#ifndef KDBG_JOURNEY_FREED
#define KDBG_JOURNEY_FREED(skb)
#endif

int kdbg_on_kfree_skb(__u64 *ctx)
{
	__u64 location = ctx[ARG_LOCATION];
	__u32 reason = ctx[ARG_REASON];
	struct kdbg_drop_event e = {};
	__u64 skb, head;
	__u16 nh;

	KDBG_JOURNEY_FREED(ctx[ARG_SKB]);	/* its journey's slot is free */
	{
		__u64 loc = location;
		/* filters on reason and location */
		{{FILTER_EARLY}}
	}
#if STATS_ONLY && COUNT_EARLY
	/* --stats with no filter past reason and location: one per-CPU map update
	 * (after reading the device, when the counts are per device). */
#if STATS_BY_DEV
	read_dev(ctx, ctx[ARG_SKB], &e);
#endif
	count_match(reason, location, &e);
	return 0;
#endif
	count(KDBG_CTR_SEEN);
	skb = ctx[ARG_SKB];
	e.location = location;
	e.reason = reason;
	e.protocol = __builtin_bswap16(FIELD(__u16, skb, SKB_PROTOCOL));
	e.skbaddr = skb;
#if DEV_FILTER
	read_dev(ctx, skb, &e);
	{
		__u32 netns = e.netns;
		char *ifname = e.ifname;
		/* filters on netns and device */
		{{FILTER_DEV}}
	}
#endif
	head = FIELD(__u64, skb, SKB_HEAD);
	nh = FIELD(__u16, skb, SKB_NETWORK_HDR);
	if (head && nh != 0xffff)
		read_packet(skb, &e, head, nh);
	{
		__u8 family = e.family, l4proto = e.l4proto, l4_valid = e.l4_valid;
		__u16 sport = e.sport, dport = e.dport;
		__u8 has_ports = l4_valid && (l4proto == 6 || l4proto == 17 || l4proto == 132);
		__u32 s[4], d[4];
		__builtin_memcpy(s, e.saddr, 16);
		__builtin_memcpy(d, e.daddr, 16);
		/* filters on the packet */
		{{FILTER_PKT}}
	}
#if !DEV_FILTER
	read_dev(ctx, skb, &e);  /* only for what passed: no filter needed it earlier */
#endif
	e.len = FIELD(__u32, skb, SKB_LEN);

	count_match(e.reason, e.location, &e);
#if STATS_ONLY
	return 0;
#endif
	/* The packet's mark and conntrack state, for the rule that dropped it: two loads,
	 * only for drops that are sent (never under --stats). */
#if CT_READS
	e.mark = FIELD(__u32, skb, SKB_MARK);
#endif
#if SKB_NFCT >= 0 && CT_READS
	{
		__u64 nfct = FIELD(__u64, skb, SKB_NFCT);
		__u64 entry = nfct & ~7ULL;

		e.ctinfo = nfct & 7;
		if (entry) {
			e.ct = KDBG_CT_ATTACHED;
#if CT_SPAN_LEN > 0
			/* _nfct is a plain integer to the verifier: the entry's fields with one
			 * helper call (each call costs more than the bytes it copies), only for
			 * a packet that has one. */
			int zero = 0;
			struct kdbg_ct_span *c = ct_span.lookup(&zero);

			if (c && !bpf_probe_read_kernel(c->w, CT_SPAN_LEN,
							(void *)(entry + CT_SPAN_START))) {
				/* typed: each field's own alignment in struct nf_conn, which the
				 * 8-byte-aligned span keeps (a plain byte copy takes 4 times the
				 * instructions) */
				e.ct_zone = *(__u16 *)CT_IN_SPAN(c, CT_ZONE_ID);
				e.ct_mark = *(__u32 *)CT_IN_SPAN(c, CT_MARK);
				/* status's low 32 bits (little-endian), where every IPS_ bit lies */
				e.ct_status = *(__u32 *)CT_IN_SPAN(c, CT_STATUS);
				__builtin_memcpy(e.ct_orig_saddr,
						 (__u32 *)CT_IN_SPAN(c, CT_TUPLEHASH + CT_HASH_TUPLE),
						 40);
				__builtin_memcpy(e.ct_reply_saddr,
						 (__u32 *)CT_IN_SPAN(c, CT_TUPLEHASH + CT_HASH_SIZE +
								     CT_HASH_TUPLE), 40);
				e.ct |= KDBG_CT_READ | KDBG_CT_STATUS | KDBG_CT_TUPLE |
					KDBG_CT_REPLY_TUPLE;
			}
#else
#if CT_ZONE_ID >= 0 && CT_MARK >= 0
			/* _nfct is a plain integer to the verifier: read the entry's zone
			 * and mark with two helper calls, only for a packet that has one. */
			if (!bpf_probe_read_kernel(&e.ct_zone, sizeof(e.ct_zone),
						   (void *)(entry + CT_ZONE_ID)) &&
			    !bpf_probe_read_kernel(&e.ct_mark, sizeof(e.ct_mark),
						   (void *)(entry + CT_MARK)))
				e.ct |= KDBG_CT_READ;
#endif
#if CT_STATUS >= 0
			/* its low 32 bits (little-endian), where every IPS_ bit lies */
			if (!bpf_probe_read_kernel(&e.ct_status, sizeof(e.ct_status),
						   (void *)(entry + CT_STATUS)))
				e.ct |= KDBG_CT_STATUS;
#endif
#if CT_TUPLEHASH >= 0 && CT_HASH_TUPLE >= 0 && CT_TUPLE_DST == 20 && \
	CT_TUPLE_PROTONUM == 38 && CT_TUPLE_DIR == 39
			if (!bpf_probe_read_kernel(e.ct_orig_saddr, 40,
						   (void *)(entry + CT_TUPLEHASH + CT_HASH_TUPLE)))
				e.ct |= KDBG_CT_TUPLE;
#if CT_HASH_SIZE > 0
			if (!bpf_probe_read_kernel(e.ct_reply_saddr, 40,
						   (void *)(entry + CT_TUPLEHASH + CT_HASH_SIZE +
							    CT_HASH_TUPLE)))
				e.ct |= KDBG_CT_REPLY_TUPLE;
#endif
#endif
#endif
		}
	}
#else
	e.ctinfo = KDBG_CT_NONE;
#endif
	/* Hand the event over: one record each while the ring has room (kdbg/trace/program.py),
	 * or the record of bpf/drop_record.bpf.c with the packet's first bytes (--write). */
	{{OUTPUT}}
	return 0;
}
