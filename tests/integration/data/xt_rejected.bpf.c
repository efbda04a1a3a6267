// SPDX-License-Identifier: GPL-2.0
/* The verifier rejects this: a hash map value is used without the NULL check. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} xt_unchecked SEC(".maps");

SEC("xdp")
int xt_rejected(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *value = bpf_map_lookup_elem(&xt_unchecked, &zero);

	return *value ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
