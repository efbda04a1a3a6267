// SPDX-License-Identifier: GPL-2.0
// The write monitor: counts the write() calls of one process (its tgid in wm_pid[0]; 0, at load, watches none)
// and sends an event per call through the ring buffer wm_events. Three forms of the same count, in wm_counts:
//   [0] wm_tracepoint  tracepoint/syscalls/sys_enter_write  (every kernel; the one that also sends events)
//   [1] wm_kprobe      kprobe/vfs_write                     (kernels with CONFIG_KPROBES)
//   [2] wm_fentry      fentry/vfs_write                     (kernels that allow BPF trampolines)
// Attach the forms the kernel has with bpf_program's programs option (see docs/TRACING.md).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct wm_event {
    __u32 pid;
    __u32 fd;
    __u64 bytes;
    char comm[16];
};
const struct wm_event *unused_wm_event __attribute__((unused)); /* puts the struct in the object's BTF */

struct sys_enter_write_args { /* /sys/kernel/tracing/events/syscalls/sys_enter_write/format */
    __u64 common;
    __s32 syscall_nr;
    __u64 fd;
    __u64 buf;
    __u64 count;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} wm_pid SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} wm_counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 16);
} wm_events SEC(".maps");

static __always_inline int watched(void)
{
    __u32 zero = 0, *pid = bpf_map_lookup_elem(&wm_pid, &zero);
    return pid && *pid && *pid == (__u32)(bpf_get_current_pid_tgid() >> 32);
}

static __always_inline void count(__u32 form)
{
    __u64 *calls = bpf_map_lookup_elem(&wm_counts, &form);
    if (calls)
        __sync_fetch_and_add(calls, 1);
}

SEC("tracepoint/syscalls/sys_enter_write")
int wm_tracepoint(struct sys_enter_write_args *args)
{
    struct wm_event *event;

    if (!watched())
        return 0;
    count(0);
    event = bpf_ringbuf_reserve(&wm_events, sizeof(*event), 0);
    if (!event)
        return 0;
    event->pid = bpf_get_current_pid_tgid() >> 32;
    event->fd = args->fd;
    event->bytes = args->count;
    bpf_get_current_comm(event->comm, sizeof(event->comm));
    bpf_ringbuf_submit(event, 0);
    return 0;
}

SEC("kprobe/vfs_write")
int wm_kprobe(void *ctx)
{
    if (watched())
        count(1);
    return 0;
}

SEC("fentry/vfs_write")
int wm_fentry(void *ctx)
{
    if (watched())
        count(2);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
