// Counts the getppid() calls of one process (its tgid in tr_pid[0]), twice over: through the syscall's
// tracepoint (counts[0]) and through the BTF-typed raw tracepoint sys_enter (counts[1]); each call of the
// tracepoint form also sends an event to the ring buffer tr_events. -DGENERATION=n makes another build.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef GENERATION
#define GENERATION 1
#endif
#define NR_GETPPID 110 /* x86_64 */

struct tr_event {
    __u32 pid;
    __u32 generation;
    __u64 calls;
    char comm[16];
};
const struct tr_event *unused_tr_event __attribute__((unused)); /* puts the struct in the object's BTF */

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} tr_pid SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} tr_counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} tr_events SEC(".maps");

static __always_inline int watched(void)
{
    __u32 zero = 0;
    __u32 *pid = bpf_map_lookup_elem(&tr_pid, &zero);
    return pid && *pid && *pid == (__u32)(bpf_get_current_pid_tgid() >> 32);
}

static __always_inline __u64 count(__u32 index)
{
    __u64 *calls = bpf_map_lookup_elem(&tr_counts, &index);
    if (!calls)
        return 0;
    return __sync_fetch_and_add(calls, 1) + 1;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int tr_tracepoint(void *ctx)
{
    struct tr_event *event;
    __u64 calls;

    if (!watched())
        return 0;
    calls = count(0);
    event = bpf_ringbuf_reserve(&tr_events, sizeof(*event), 0);
    if (!event)
        return 0;
    event->pid = bpf_get_current_pid_tgid() >> 32;
    event->generation = GENERATION;
    event->calls = calls;
    bpf_get_current_comm(event->comm, sizeof(event->comm));
    bpf_ringbuf_submit(event, 0);
    return 0;
}

SEC("tp_btf/sys_enter")
int tr_btf(__u64 *ctx)
{
    if (ctx[1] == NR_GETPPID && watched())
        count(1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
