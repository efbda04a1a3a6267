// SPDX-License-Identifier: GPL-2.0
/* Test subject for xdp_program: drops IPv4 UDP datagrams whose destination port is a key
 * of xt_ports, passes everything else. VARIANT changes the code (not the map layout);
 * PORTS_MAX changes the layout of xt_ports. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef VARIANT
#define VARIANT 1
#endif
#ifndef PORTS_MAX
#define PORTS_MAX 16
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORTS_MAX);
	__type(key, __u16);
	__type(value, __u8);
} xt_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} xt_seen SEC(".maps");

static __always_inline int udp_port_listed(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp;
	__u16 port;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP)
		return 0;
	udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > data_end)
		return 0;
	port = bpf_ntohs(udp->dest);
	return bpf_map_lookup_elem(&xt_ports, &port) != NULL;
}

SEC("xdp")
int xt_filter(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *seen = bpf_map_lookup_elem(&xt_seen, &zero);

	if (seen)
		*seen += VARIANT;
	return udp_port_listed((void *)(long)ctx->data, (void *)(long)ctx->data_end) ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
