/* A packet's journey (kdbg watch --journey, and --break): the drop program's part that
 * follows packets hop by hop, so that a drop can say where its packet went first.
 *
 * A template fragment: kdbg/trace/journeyprog.py fills it and passes it to
 * bpf/kfree_skb.bpf.c, whose text it joins at file scope (its struct offsets and its
 * ring buffer "events" are this fragment's too), with journey_output() as the drop's
 * hand-over. Each hop tracepoint the running kernel has gets a BTF-typed raw tracepoint
 * program (tp_btf, as the drop program: its first argument is the skb, whose fields are
 * plain loads; no trace record is written for it), and consume_skb one that frees the
 * skb's slot; kfree_skb's is the drop program's own first line.
 *
 * A packet is followed when a hop of it passes the packet filters (the watch's, but
 * for the device and namespace, which say where the drop is): its skb takes its slot of
 * the table (bpf/kdbg_journey.h), and every later hop of that skb is added there
 * without looking at the filters again, so NAT does not lose it (as in kdbg path).
 * Only the first hop of a packet reads it all; a later hop on the device of the one
 * before copies the device's fields.
 */
#include "kdbg_journey.h"

#ifndef SKB_DATA
#define SKB_DATA         200
#endif
#ifndef SKB_PROTOCOL
#define SKB_PROTOCOL     176
#endif
#define DEV_LINK_OPS     2088
#define LINK_OPS_KIND    40

#define JOURNEY_SLOT_BITS 10
#define JOURNEY_SLOTS    (1U << JOURNEY_SLOT_BITS)
/* A slot with no hop for this long is free: its skb was freed without a tracepoint
 * (__kfree_skb), and its memory may hold a new packet. */
#define JOURNEY_IDLE_NS  1000000000ULL

/* The skb's fields are plain loads (FIELD, bpf/kfree_skb.bpf.c): the hop programs are
 * BTF-typed, as the drop program is. */
#define HOP_FIELD(T, base, off) FIELD(T, base, off)
#include "kdbg_hop.h"

BPF_ARRAY(journeys, struct kdbg_journey, JOURNEY_SLOTS);
BPF_PERCPU_ARRAY(journey_counters, __u64, KDBG_JOURNEY_NR_CTRS);
/* Per CPU: when its last drop found the ring buffer full (0: it had room; while it is
 * full no new packet is followed: its drop's record would not be sent, a storm), and
 * a word an skb's address goes through to become a number. */
struct journey_cpu {
	__u64 ring_full_ns;
	__u64 addr;
};
BPF_PERCPU_ARRAY(journey_cpus, struct journey_cpu, 1);

static __always_inline struct journey_cpu *journey_cpu(void)
{
	int zero = 0;
	return journey_cpus.lookup(&zero);
}

/* The address of the skb a BTF-typed argument points to, as a number (the slot's hash
 * is arithmetic the verifier allows on no typed pointer): stored to and loaded back
 * from map memory, which keeps no pointer type. */
static __always_inline __u64 journey_addr(struct journey_cpu *c, __u64 skb)
{
	c->addr = skb;
	return *(volatile __u64 *)&c->addr;
}

static __always_inline void journey_count(int slot)
{
	__u64 *v = journey_counters.lookup(&slot);
	if (v)
		(*v)++;
}

static __always_inline struct kdbg_journey *journey_of(__u64 skb)
{
	__u32 idx = KDBG_JOURNEY_SLOT(skb, JOURNEY_SLOT_BITS);
	return journeys.lookup(&idx);
}

/* 1 while the slot follows a packet. */
static __always_inline int journey_live(const struct kdbg_journey *j, __u64 now)
{
	return j->skbaddr && !j->ended && now - j->last_ns <= JOURNEY_IDLE_NS;
}

/* 1 when the hop's packet passes the packet filters: the statements below return 0. */
static __always_inline int journey_wanted(struct kdbg_hop_seen *e)
{
	KDBG_PACKET_FILTER_LOCALS(e);
	/* filters on the packet */
	if (!(l4proto == 17 && family != 0)) return 0;
		if (!(has_ports && (dport == 5593))) return 0;
	return 1;
}

/* The device, its namespace and kind: copied from the hop before when it was on the
 * same device, else read. */
static __always_inline void journey_dev(struct kdbg_journey_hop *h,
					const struct kdbg_journey_hop *prev, __u64 skb)
{
	__u64 dev = FIELD(__u64, skb, SKB_DEV), ops, kind = 0;

	h->dev = dev;
	if (prev && dev && prev->dev == dev) {
		h->seen.netns = prev->seen.netns;
		h->seen.ifindex = prev->seen.ifindex;
		__builtin_memcpy(h->seen.ifname, prev->seen.ifname, sizeof(h->seen.ifname));
		__builtin_memcpy(h->kind, prev->kind, sizeof(h->kind));
		return;
	}
	kdbg_hop_dev(&h->seen, skb, dev);
	if (dev) {
		ops = FIELD(__u64, dev, DEV_LINK_OPS);
		if (ops)
			kind = FIELD(__u64, ops, LINK_OPS_KIND);
	}
	if (kind)
		bpf_probe_read_kernel_str(h->kind, sizeof(h->kind), (void *)kind);
}

/* One more hop of the packet slot j follows, in place. */
static __always_inline void journey_more(struct kdbg_journey *j, __u64 skb, __u8 tp, int rx,
					 __u64 now)
{
	__u32 n = j->nhops;
	struct kdbg_journey_hop *h = &j->hops[n & (KDBG_JOURNEY_HOPS - 1)];

	__builtin_memset(h, 0, sizeof(*h));
	h->time_ns = now;
	h->tp = tp;
	journey_dev(h, &j->hops[(n - 1) & (KDBG_JOURNEY_HOPS - 1)], skb);
	kdbg_hop_packet(&h->seen, skb, rx);
	j->nhops = n + 1;
	j->last_ns = now;
}

/* A packet no slot follows: slot j follows it from this hop on if it passes the packet
 * filters and j is free. */
static __always_inline void journey_new(struct kdbg_journey *j, __u64 skb, __u64 addr,
					__u8 tp, int rx)
{
	struct kdbg_journey_hop e = {};
	__u64 now;

	kdbg_hop_packet(&e.seen, skb, rx);
	if (!journey_wanted(&e.seen))
		return;
	now = bpf_ktime_get_ns();
	if (journey_live(j, now)) {
		/* counted once a packet, at its first hop refused */
		if (j->refused_skb != addr || j->refused_ended)
			journey_count(KDBG_JOURNEY_CTR_BUSY);
		j->refused_skb = addr;
		j->refused_why = KDBG_JOURNEY_BUSY;
		j->refused_ended = 0;
		return;
	}
	e.time_ns = now;
	e.tp = tp;
	journey_dev(&e, 0, skb);
	j->skbaddr = addr;
	j->first_ns = now;
	j->last_ns = now;
	j->nhops = 1;
	j->ended = 0;
	__builtin_memcpy(&j->hops[0], &e, sizeof(e));
	journey_count(KDBG_JOURNEY_CTR_FOLLOWED);
}

/* A hop of the skb ``skb`` (a typed pointer) at tracepoint ``tp``. In a storm most
 * hops are of packets not followed while the ring buffer is full: those return after
 * two loads from the slot and one from the CPU's note. */
static __always_inline int journey_hop(__u64 skb, __u8 tp, int rx)
{
	struct journey_cpu *c = journey_cpu();
	struct kdbg_journey *j;
	__u64 now, addr;

	if (!skb || !c)
		return 0;
	addr = journey_addr(c, skb);
	j = journey_of(addr);
	if (!j)
		return 0;
	if (j->skbaddr == addr && !j->ended &&
	    (now = bpf_ktime_get_ns()) - j->last_ns <= JOURNEY_IDLE_NS)
		journey_more(j, skb, tp, rx, now);
	else if (!c->ring_full_ns)	/* a new packet, unless its drop would find no room */
		journey_new(j, skb, addr, tp, rx);
	return 0;
}

/* The skb was freed or consumed: its slot is free. It keeps what it holds until
 * another packet takes it, so the drop's record (after this) still finds it. 1 when
 * the slot was following this skb until now. */
static __always_inline int journey_freed(__u64 skb)
{
	struct kdbg_journey *j = journey_of(skb);

	if (!j)
		return 0;
	if (j->skbaddr == skb && !j->ended) {
		j->ended = 1;
		return 1;
	}
	if (j->refused_skb == skb)
		j->refused_ended = 1;
	return 0;
}
/* The drop program's first line (given its skb argument, a typed pointer): whether
 * this drop ends a journey it then reports. */
#define KDBG_JOURNEY_FREED(arg)							\
	struct journey_cpu *journey_c = journey_cpu();				\
	__u64 journey_skb = journey_c ? journey_addr(journey_c, (arg)) : 0;	\
	int journey_mine = journey_freed(journey_skb)

/* The drop's hand-over (the drop program's OUTPUT): its record is the event, where the
 * table is, and a copy of the skb's slot (whatever it holds: "followed" says whether it
 * is this packet's, as the drop program's first line found it: "mine"). As for every
 * drop (bpf/kfree_skb.bpf.c), the event is filled only once the ring buffer had room;
 * a drop it has none for is counted per key (ring_full), and no new packet is followed
 * until a record goes out again. */
static __always_inline void journey_output(__u64 *ctx, struct kdbg_drop_event *e,
					   __u64 skb, int mine)
{
	__u32 zero = 0, idx = KDBG_JOURNEY_SLOT(skb, JOURNEY_SLOT_BITS), n;
	struct kdbg_journey_drop *r = events.ringbuf_reserve(sizeof(*r));
	struct journey_cpu *c = journey_cpu();
	struct kdbg_journey *j, *table;

	if (!r) {
		if (c && !c->ring_full_ns)
			c->ring_full_ns = bpf_ktime_get_ns();
		ring_full(e);
		return;
	}
	fill_sent(ctx, e);
	__builtin_memcpy(&r->ev, e, sizeof(*e));
	j = journeys.lookup(&idx);
	table = journeys.lookup(&zero);
	r->table = (__u64)table;	/* a kernel address: gdb reads a slot there */
	r->slot = idx;
	r->slots = JOURNEY_SLOTS;
	r->ring_full_ns = c ? c->ring_full_ns : 0;
	if (c)
		c->ring_full_ns = 0;
	/* The slot up to its last kept hop: hops[i] for i < nhops (all of them past
	 * KDBG_JOURNEY_HOPS); the record's hops after those are not written, and not
	 * read (a failed read zeroes the copy). */
	n = j ? j->nhops : 0;
	if (n > KDBG_JOURNEY_HOPS)
		n = KDBG_JOURNEY_HOPS;
	bpf_probe_read_kernel(&r->journey, __builtin_offsetof(struct kdbg_journey, hops) +
			      n * sizeof(struct kdbg_journey_hop), j);
	r->followed = mine && e->time_ns - r->journey.last_ns <= JOURNEY_IDLE_NS;
	r->pad0 = 0;
	events.ringbuf_submit(r, 0);
}

#define KDBG_JOURNEY_HOP(name, tp, rx)						\
int kdbg_journey_##name(__u64 *ctx)						\
{										\
	return journey_hop(ctx[0], tp, rx);					\
}

/* One line per hop tracepoint this kernel has. */
KDBG_JOURNEY_HOP(net_dev_queue, 1, 0)
KDBG_JOURNEY_HOP(netif_rx, 2, 1)
KDBG_JOURNEY_HOP(netif_receive_skb, 3, 1)
KDBG_JOURNEY_HOP(netif_receive_skb_entry, 4, 1)
KDBG_JOURNEY_HOP(napi_gro_receive_entry, 5, 1)

int kdbg_journey_consume_skb(__u64 *ctx)
{
	struct journey_cpu *c = journey_cpu();

	if (c && ctx[0])
		journey_freed(journey_addr(c, ctx[0]));
	return 0;
}
