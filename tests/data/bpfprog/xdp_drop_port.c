/* A test XDP program: drops UDP datagrams to port DROP_PORT, passes every other packet.
 * Built by bcc at test time (tests/vm/bpf_loader.py, -DDROP_PORT=N); kdbg watch --bpf
 * must name the line of the return that drops. */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>

int kdbg_test_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end || eth->h_proto != htons(ETH_P_IP))
		return XDP_PASS;
	if (ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return XDP_PASS;
	if (udp->dest == htons(DROP_PORT))
		return XDP_DROP;
	return XDP_PASS;
}
