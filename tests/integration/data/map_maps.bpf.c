// Maps for xdp_map's tests: a hash with a BTF struct value, a per-CPU counter array
// the program increments, a small LPM trie, and a hash without BTF.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

enum verdict { VERDICT_PASS = 0, VERDICT_DROP = 1, VERDICT_COUNT = 2 };

struct port_range {
	__u16 low;
	__u16 high;
};

struct backend {
	char label[12];
	enum verdict verdict;
	struct port_range ports;
	__u8 mac[6];
	__u8 weight : 4;
	__u8 healthy : 1;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

struct prefix_v4 {
	__u32 prefixlen;
	__u8 address[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix_v4);
	__type(value, __u32);
} prefixes SEC(".maps");

// Sizes only: libbpf creates it without BTF key/value types.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__uint(key_size, 6);
	__uint(value_size, 4);
} raw_macs SEC(".maps");

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	__u32 slot = 0;
	struct counters *counters = bpf_map_lookup_elem(&stats, &slot);

	if (counters) {
		counters->packets += 1;
		counters->bytes += ctx->data_end - ctx->data;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
