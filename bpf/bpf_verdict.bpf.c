/* kdbg BPF-program drops: an fexit program on an XDP program (kdbg watch --bpf).
 *
 * Loaded once per traced program (BPF_PROG_TYPE_TRACING, expected attach type
 * BPF_TRACE_FEXIT, attach_prog_fd the traced program): it runs after the traced
 * program returns, with ctx[0] its xdp_buff and ctx[1] its verdict. A verdict that
 * drops (VERDICT_WANTED) is reported as a struct kdbg_drop_event: reason is the
 * verdict, location the traced program's JITed entry (bpf_get_func_ip), skbaddr the
 * xdp_buff, and the packet read from the xdp_buff's data.
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
#define VERDICT_WANTED(v) ({{VERDICT_WANTED}})

BPF_RINGBUF_OUTPUT(events, {{RINGBUF_PAGES}});
BPF_PERCPU_ARRAY(counters, __u64, KDBG_NR_CTRS);

static __always_inline void count(int slot)
{
	__u64 *v = counters.lookup(&slot);
	if (v)
		(*v)++;
}

int kdbg_on_bpf_exit(unsigned long long *ctx)
{
	__u64 xdp = ctx[0], verdict = ctx[1];
	__u64 dev, data, data_end, net, raw = 0;
	__u32 netns = 0, s[4] = {}, d[4] = {};
	__u16 proto = 0, sport = 0, dport = 0;
	__u8 family = 0, l4proto = 0, has_ports = 0, eth[18] = {}, hdr[48] = {};
	char ifname[KDBG_IFNAMSIZ] = {};
	int l3 = 14, have_raw = 0;
	struct kdbg_drop_event *e;

	if (!(VERDICT_WANTED(verdict)))
		return 0;
	count(KDBG_CTR_SEEN);
	dev = read_ptr(read_ptr(xdp, XDP_RXQ), RXQ_DEV);
	if (dev) {
		bpf_probe_read_kernel_str(ifname, sizeof(ifname), (void *)(dev + DEV_NAME));
		net = read_ptr(dev, DEV_NET);
		if (net)
			bpf_probe_read_kernel(&netns, sizeof(netns), (void *)(net + NET_INUM));
	}
	{{DEV_FILTER}}
	data = read_ptr(xdp, XDP_DATA);
	data_end = read_ptr(xdp, XDP_DATA_END);
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
	e = events.ringbuf_reserve(sizeof(struct kdbg_drop_event));
	if (!e) {
		count(KDBG_CTR_LOST);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->time_ns = bpf_ktime_get_ns();
	e->skbaddr = xdp;
	e->location = bpf_get_func_ip(ctx);
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	e->tid = (__u32)bpf_get_current_pid_tgid();
	e->cpu = bpf_get_smp_processor_id();
	e->reason = verdict;
	e->netns = netns;
	if (dev)
		bpf_probe_read_kernel(&e->ifindex, sizeof(e->ifindex), (void *)(dev + DEV_IFINDEX));
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
	events.ringbuf_submit(e, 0);
	return 0;
}
