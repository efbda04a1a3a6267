// SPDX-License-Identifier: GPL-2.0
// The XDP health monitor: per-CPU counters of what goes wrong around XDP, read by xdp_facts and xdp_stats.
//   xm_exceptions       xdp:xdp_exception (a program returned XDP_ABORTED or an action the driver cannot do),
//                       by network namespace, interface, program id and action
//   xm_redirects  xdp:xdp_redirect_err (an XDP_REDIRECT that failed), by namespace, interface, program
//                       id and error (a positive errno)
//   xm_drops            skb:kfree_skb (a packet freed as dropped), by namespace, interface and drop reason,
//                       for interfaces that run an XDP program only
// Both XDP tracepoints fire only on failures, so the XDP path of a packet that passes pays nothing; kfree_skb
// fires per dropped packet. BTF-typed tracepoints (tp_btf) and CO-RE field access: kernel >= 5.5 with BTF.
// Counters are keyed by the network namespace's inode number too, as lab hosts share one kernel.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_KEYS 4096
#define XDP_MODES 3 /* __MAX_XDP_MODE: skb, drv, hw */

struct bpf_prog_aux { __u32 id; } __attribute__((preserve_access_index));
struct bpf_prog { struct bpf_prog_aux *aux; } __attribute__((preserve_access_index));
struct bpf_xdp_entity { struct bpf_prog *prog; } __attribute__((preserve_access_index));
struct ns_common { unsigned int inum; } __attribute__((preserve_access_index));
struct net { struct ns_common ns; } __attribute__((preserve_access_index));
typedef struct { struct net *net; } possible_net_t;
struct net_device {
    int ifindex;
    possible_net_t nd_net;
    struct bpf_xdp_entity xdp_state[XDP_MODES];
} __attribute__((preserve_access_index));
struct sk_buff { struct net_device *dev; } __attribute__((preserve_access_index));

struct xm_exception_key {
    __u32 netns;
    __u32 ifindex;
    __u32 prog_id;
    __u32 action;
};

struct xm_redirect_key {
    __u32 netns;
    __u32 ifindex;
    __u32 prog_id;
    __u32 error;
};

struct xm_drop_key {
    __u32 netns;
    __u32 ifindex;
    __u32 reason;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, MAX_KEYS);
    __type(key, struct xm_exception_key);
    __type(value, __u64);
} xm_exceptions SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, MAX_KEYS);
    __type(key, struct xm_redirect_key);
    __type(value, __u64);
} xm_redirects SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, MAX_KEYS);
    __type(key, struct xm_drop_key);
    __type(value, __u64);
} xm_drops SEC(".maps");

static __always_inline void count(void *map, const void *key)
{
    __u64 one = 1, *packets = bpf_map_lookup_elem(map, key);
    if (packets)
        *packets += 1; /* this CPU's slot: no other CPU writes it */
    else
        bpf_map_update_elem(map, key, &one, BPF_NOEXIST);
}

static __always_inline __u32 netns_of(const struct net_device *dev)
{
    return dev->nd_net.net->ns.inum;
}

static __always_inline int runs_xdp(const struct net_device *dev)
{
    return dev->xdp_state[0].prog || dev->xdp_state[1].prog || dev->xdp_state[2].prog;
}

SEC("tp_btf/xdp_exception")
int xm_exception(__u64 *ctx)
{
    const struct net_device *dev = (const void *)ctx[0];
    const struct bpf_prog *prog = (const void *)ctx[1];
    struct xm_exception_key key = {
        .netns = netns_of(dev), .ifindex = dev->ifindex, .prog_id = prog->aux->id, .action = (__u32)ctx[2]};

    count(&xm_exceptions, &key);
    return 0;
}

SEC("tp_btf/xdp_redirect_err")
int xm_redirect_err(__u64 *ctx)
{
    const struct net_device *dev = (const void *)ctx[0];
    const struct bpf_prog *prog = (const void *)ctx[1];
    struct xm_redirect_key key = {
        .netns = netns_of(dev), .ifindex = dev->ifindex, .prog_id = prog->aux->id, .error = -(int)ctx[3]};

    count(&xm_redirects, &key);
    return 0;
}

SEC("tp_btf/kfree_skb")
int xm_kfree_skb(__u64 *ctx)
{
    const struct sk_buff *skb = (const void *)ctx[0];
    const struct net_device *dev = skb->dev;
    struct xm_drop_key key = {};

    if (!dev || !runs_xdp(dev))
        return 0;
    key.netns = netns_of(dev);
    key.ifindex = dev->ifindex;
    key.reason = (__u32)ctx[2];
    count(&xm_drops, &key);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
