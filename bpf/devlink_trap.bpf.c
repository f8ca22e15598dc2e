/* kdbg hardware drops: runs on the devlink_trap_report raw tracepoint.
 *
 * A template: kdbg/hwdrops/probe.py fills every double-braced name. The raw
 * tracepoint hands over (devlink, skb, metadata) rather than the formatted
 * record, so the packet itself can be read; every struct offset comes from the
 * running kernel's BTF.
 */
#include "hw_event.h"
#include "kdbg_read.h"

#define DEVLINK_DEV      {{DEVLINK_DEV}}
#define DEVICE_NAME      {{DEVICE_NAME}}
#define DEVICE_BUS       {{DEVICE_BUS}}
#define BUS_NAME         {{BUS_NAME}}
#define DEVICE_DRIVER    {{DEVICE_DRIVER}}
#define DRIVER_NAME      {{DRIVER_NAME}}
#define MD_TRAP_NAME     {{MD_TRAP_NAME}}
#define MD_GROUP_NAME    {{MD_GROUP_NAME}}
#define MD_INPUT_DEV     {{MD_INPUT_DEV}}
#define MD_TRAP_TYPE     {{MD_TRAP_TYPE}}
#define DEV_NAME         {{DEV_NAME}}
#define SKB_HEAD         {{SKB_HEAD}}
#define SKB_NETWORK_HDR  {{SKB_NETWORK_HDR}}
#define SKB_LEN          {{SKB_LEN}}

/* 1: stream each report (kdbg watch --hw); 0: count only (kdbg exporter). */
#define STREAM           {{STREAM}}

BPF_RINGBUF_OUTPUT(events, {{RINGBUF_PAGES}});
BPF_PERCPU_HASH(hw_stats, struct kdbg_hw_key, __u64, {{STATS_ENTRIES}});
BPF_PERCPU_ARRAY(counters, __u64, KDBG_HW_NR_CTRS);

static __always_inline void count(int slot)
{
	__u64 *v = counters.lookup(&slot);
	if (v)
		(*v)++;
}

static __always_inline void read_str(char *dst, int size, __u64 ptr)
{
	if (ptr)
		bpf_probe_read_kernel_str(dst, size, (void *)ptr);
}

#if STREAM
static __always_inline void read_packet(__u64 skb, struct kdbg_hw_event *e)
{
	__u64 head = read_ptr(skb, SKB_HEAD), raw = 0;
	__u16 nh = 0xffff;
	__u8 hdr[48] = {};
	int have_raw = 0;

	bpf_probe_read_kernel(&e->len, sizeof(e->len), (void *)(skb + SKB_LEN));
	bpf_probe_read_kernel(&nh, sizeof(nh), (void *)(skb + SKB_NETWORK_HDR));
	if (!head || nh == 0xffff)
		return;  /* the driver handed over no network header */
	bpf_probe_read_kernel(hdr, sizeof(hdr), (void *)(head + nh));
	if ((hdr[0] >> 4) == 4) {
		e->family = 4;
		e->l4proto = hdr[9];
		__builtin_memcpy(e->saddr, &hdr[12], 4);
		__builtin_memcpy(e->daddr, &hdr[16], 4);
		if ((hdr[0] & 0x0f) == 5 && ((hdr[6] & 0x1f) | hdr[7]) == 0) {
			__builtin_memcpy(&raw, &hdr[20], 8);
			have_raw = 1;
		}
	} else if ((hdr[0] >> 4) == 6) {
		e->family = 6;
		e->l4proto = hdr[6];
		__builtin_memcpy(e->saddr, &hdr[8], 16);
		__builtin_memcpy(e->daddr, &hdr[24], 16);
		__builtin_memcpy(&raw, &hdr[40], 8);
		have_raw = 1;
	}
	if (have_raw && (e->l4proto == 6 || e->l4proto == 17 || e->l4proto == 132)) {
		__u16 w0 = raw, w1 = raw >> 16;
		e->sport = __builtin_bswap16(w0);
		e->dport = __builtin_bswap16(w1);
		e->l4_valid = 1;
	}
}
#endif

int kdbg_on_devlink_trap(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 devlink = ctx->args[0], skb = ctx->args[1], md = ctx->args[2];
	__u64 dev = read_ptr(devlink, DEVLINK_DEV), input_dev, zero = 0, *n;
	struct kdbg_hw_key key = {};

	read_str(key.bus, sizeof(key.bus), read_ptr(read_ptr(dev, DEVICE_BUS), BUS_NAME));
	read_str(key.device, sizeof(key.device), read_ptr(dev, DEVICE_NAME));
	read_str(key.trap, sizeof(key.trap), read_ptr(md, MD_TRAP_NAME));
	read_str(key.group, sizeof(key.group), read_ptr(md, MD_GROUP_NAME));
	input_dev = read_ptr(md, MD_INPUT_DEV);
	if (input_dev)
		bpf_probe_read_kernel_str(key.input_port, sizeof(key.input_port),
					  (void *)(input_dev + DEV_NAME));

	n = hw_stats.lookup_or_try_init(&key, &zero);
	if (n)
		(*n)++;
	else
		count(KDBG_HW_CTR_STATS_FULL);
#if STREAM
	{
		struct kdbg_hw_event *e = events.ringbuf_reserve(sizeof(struct kdbg_hw_event));
		if (!e) {
			count(KDBG_HW_CTR_LOST);
			return 0;
		}
		__builtin_memset(e, 0, sizeof(*e));
		e->time_ns = bpf_ktime_get_ns();
		e->cpu = bpf_get_smp_processor_id();
		if (md)
			bpf_probe_read_kernel(&e->trap_type, sizeof(e->trap_type),
					      (void *)(md + MD_TRAP_TYPE));
		__builtin_memcpy(e->bus, key.bus, sizeof(e->bus));
		__builtin_memcpy(e->device, key.device, sizeof(e->device));
		__builtin_memcpy(e->trap, key.trap, sizeof(e->trap));
		__builtin_memcpy(e->group, key.group, sizeof(e->group));
		__builtin_memcpy(e->input_port, key.input_port, sizeof(e->input_port));
		read_str(e->driver, sizeof(e->driver),
			 read_ptr(read_ptr(dev, DEVICE_DRIVER), DRIVER_NAME));
		if (skb)
			read_packet(skb, e);
		events.ringbuf_submit(e, 0);
	}
#endif
	return 0;
}
