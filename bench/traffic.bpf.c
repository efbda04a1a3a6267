// SPDX-License-Identifier: GPL-2.0
/* bench/traffic.py's own programs, compiled by it at run time: the generator, run through BPF_PROG_RUN
 * with BPF_F_TEST_XDP_LIVE_FRAMES, whose XDP_TX sends each frame out of the veth named as the run's
 * ingress interface, and the floor of the receiving end, a program that only drops. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int traffic_gen(struct xdp_md *ctx)
{
	return XDP_TX;
}

SEC("xdp")
int bare_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}
