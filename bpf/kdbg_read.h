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

#endif
