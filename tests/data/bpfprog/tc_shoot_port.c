/* A test tc program: shoots UDP datagrams to port DROP_PORT (TC_ACT_SHOT), lets every
 * other packet through.
 * Built by bcc at test time (tests/vm/bpf_loader.py, -DDROP_PORT=N); kdbg watch --bpf
 * must name the line of the return that drops. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>

int kdbg_test_tc(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end || eth->h_proto != htons(ETH_P_IP))
		return TC_ACT_OK;
	if (ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return TC_ACT_OK;
	if (udp->dest == htons(DROP_PORT))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
