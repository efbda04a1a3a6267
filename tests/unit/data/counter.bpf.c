// A minimal XDP object for the libbpf layer's tests: one per-CPU counter, one LPM trie.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} packets SEC(".maps");

struct prefix_v4 {
	__u32 prefixlen;
	__u8 address[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix_v4);
	__type(value, __u32);
} prefixes SEC(".maps");

SEC("xdp")
int count_and_pass(struct xdp_md *ctx)
{
	__u32 slot = 0;
	__u64 *count = bpf_map_lookup_elem(&packets, &slot);

	if (count)
		*count += 1;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
