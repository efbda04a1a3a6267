// SPDX-License-Identifier: GPL-2.0
// Packet summaries: an XDP program that passes every packet and sends, for each IPv4 TCP or UDP one, its
// addresses, ports, protocol, length and interface through the ring buffer ps_events (the ring's space
// bounds the cost: when it is full, summaries are lost, never packets).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct ps_packet {
    __u8 source[4];
    __u8 destination[4];
    __u16 source_port;
    __u16 destination_port;
    __u8 protocol;
    __u8 pad[3];
    __u32 length;
    __u32 ifindex;
};
const struct ps_packet *unused_ps_packet __attribute__((unused)); /* puts the struct in the object's BTF */

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 18);
} ps_events SEC(".maps");

SEC("xdp")
int packet_summary(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *ports = (void *)(ip + 1); /* TCP's ports are where UDP's are */
    struct ps_packet *packet;

    if ((void *)(ports + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5
        || (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
        return XDP_PASS;
    packet = bpf_ringbuf_reserve(&ps_events, sizeof(*packet), 0);
    if (!packet)
        return XDP_PASS;
    __builtin_memcpy(packet->source, &ip->saddr, 4);
    __builtin_memcpy(packet->destination, &ip->daddr, 4);
    packet->source_port = bpf_ntohs(ports->source);
    packet->destination_port = bpf_ntohs(ports->dest);
    packet->protocol = ip->protocol;
    packet->length = end - data;
    packet->ifindex = ctx->ingress_ifindex;
    bpf_ringbuf_submit(packet, 0);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
