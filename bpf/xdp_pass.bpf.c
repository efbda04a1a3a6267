// SPDX-License-Identifier: GPL-2.0
/* The floor for bench/dataplane.py: a program that only passes. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("xdp")
int xdpfleet_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
