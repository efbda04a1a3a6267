// SPDX-License-Identifier: GPL-2.0
/* A socket filter only: no XDP program for xdp_program to attach. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("socket")
int xt_socket(struct __sk_buff *skb)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
