// One program of a kind that needs a kernel feature: -DKPROBE (kprobes) or -DFENTRY (BPF trampolines).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} tr_writes SEC(".maps");

#ifdef KPROBE
SEC("kprobe/vfs_write")
#else
SEC("fentry/vfs_write")
#endif
int tr_write(void *ctx)
{
    __u32 zero = 0;
    __u64 *writes = bpf_map_lookup_elem(&tr_writes, &zero);
    if (writes)
        __sync_fetch_and_add(writes, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
