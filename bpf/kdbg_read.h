/* Reading kernel memory at field offsets the loader fills in from the running kernel's
 * BTF (a negative offset: the field does not exist on this kernel). Shared by every
 * kdbg BPF program. */
#ifndef KDBG_READ_H
#define KDBG_READ_H

/* The pointer-sized value at base + off; 0 when base is NULL or the field is absent. */
static __always_inline __u64 read_ptr(__u64 base, long off)
{
	__u64 v = 0;
	if (base && off >= 0)
		bpf_probe_read_kernel(&v, sizeof(v), (void *)(base + off));
	return v;
}

/* The field of type T at base + off, read with a helper (base is a plain number, as a raw
 * tracepoint's argument is); 0 when base is NULL or the field is absent. */
#define KDBG_READ_FIELD(T, base, off) ({					\
	T __kdbg_v = 0;								\
	if ((base) && (off) >= 0)						\
		bpf_probe_read_kernel(&__kdbg_v, sizeof(__kdbg_v),		\
				      (void *)((__u64)(base) + (off)));		\
	__kdbg_v;								\
})

/* Ports, or ICMP type and code then identifier and sequence, from ``raw``, the first 8
 * bytes of L4 read as one scalar (byte-array indexing becomes pointer arithmetic the
 * verifier rejects): sets sport, dport, icmp_type, icmp_code and l4_valid of the event
 * ``e`` points to, for its l4proto. */
#define KDBG_L4_FIELDS(e, raw) do {						\
	__u16 w0 = (raw), w1 = (raw) >> 16, w2 = (raw) >> 32, w3 = (raw) >> 48;	\
	if ((e)->l4proto == 6 || (e)->l4proto == 17 || (e)->l4proto == 132) {	\
		(e)->sport = __builtin_bswap16(w0);				\
		(e)->dport = __builtin_bswap16(w1);				\
		(e)->l4_valid = 1;						\
	} else if ((e)->l4proto == 1 || (e)->l4proto == 58) {			\
		(e)->icmp_type = w0 & 0xff;					\
		(e)->icmp_code = w0 >> 8;					\
		(e)->sport = __builtin_bswap16(w2);				\
		(e)->dport = __builtin_bswap16(w3);				\
		(e)->l4_valid = 1;						\
	}									\
} while (0)

#endif
