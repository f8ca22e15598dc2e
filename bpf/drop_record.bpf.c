/* kdbg watch --write: the hand-over of kfree_skb.bpf.c for a recording.
 *
 * A template fragment (kdbg/record/recorder.py fills it and passes it to the drop
 * program as its OUTPUT): the event and the packet's first bytes are written in
 * place in the ring buffer as one struct kdbg_drop_record (bpf/drop_record.h)
 * followed by the snapshot. No wakeup: the reader drains the ring in bulk on its
 * own timer, so a storm costs no interrupt per drop. Every record has the same
 * size, which lets the reader check a whole batch of headers at once.
 */
#define SNAPLEN          {{SNAPLEN}}
#define SNAP_BYTES       {{SNAP_BYTES}}	/* SNAPLEN rounded up to 8 */
#define SKB_MAC_HDR      {{SKB_MAC_HDR}}
#define SKB_DATA         {{SKB_DATA}}
#define SKB_TAIL         {{SKB_TAIL}}
#define DEV_TYPE         {{DEV_TYPE}}
	{
		struct kdbg_drop_record *r;
		__u64 dev = FIELD(__u64, skb, SKB_DEV), data = FIELD(__u64, skb, SKB_DATA);
		__u64 start = 0, avail = 0;
		__u16 mac = FIELD(__u16, skb, SKB_MAC_HDR), devtype = 0;
		__u32 tail = FIELD(__u32, skb, SKB_TAIL);
		__s64 wire;

		r = events.ringbuf_reserve(sizeof(*r) + SNAP_BYTES);
		if (!r) {
			count(KDBG_CTR_LOST);
			return 0;
		}
		fill_sent(ctx, &e);
		__builtin_memcpy(&r->ev, &e, sizeof(e));
		if (dev)
			devtype = FIELD(__u16, dev, DEV_TYPE);
		r->linktype = KDBG_LINK_NONE;
		r->devtype = devtype;
		r->caplen = 0;
		r->wirelen = 0;
		r->pad0 = 0;
		/* ARPHRD_ETHER (1) and ARPHRD_LOOPBACK (772) carry an Ethernet header. */
		if (head && mac != 0xffff && nh != 0xffff && mac < nh &&
		    (devtype == 1 || devtype == 772)) {
			start = head + mac;
			r->linktype = KDBG_LINK_ETHERNET;
		} else if (head && nh != 0xffff && e.family) {
			start = head + nh;
			r->linktype = KDBG_LINK_RAW;
		}
		if (start) {
			/* The linear part ends at head + tail; what lies in page frags is not read. */
			if (head + tail > start)
				avail = head + tail - start;
			if (avail > SNAPLEN)
				avail = SNAPLEN;
			wire = (__s64)e.len + (__s64)(data - start);
			r->wirelen = wire > 0 ? wire : avail;
#if SNAPLEN > 0
			/* Keep the bound where the verifier can see it. */
			asm volatile("" : "+r"(avail));
			if (avail <= SNAPLEN &&
			    bpf_probe_read_kernel((void *)(r + 1), avail, (void *)start) == 0)
				r->caplen = avail;
#endif
		}
		events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	}
