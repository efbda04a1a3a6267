// SPDX-License-Identifier: GPL-2.0
/* Two XDP programs in one object: xdp_program needs `program` to choose. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xt_first(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xt_second(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
