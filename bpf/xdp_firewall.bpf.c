// SPDX-License-Identifier: GPL-2.0
/* xdpfleet firewall: ordered rules, first match wins (semantics: docs/RULES.md). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdp_firewall.h"

#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT_HEADERS 8
#define IPV4_FRAG_OFFSET 0x1fff
#define IPV6_FRAG_OFFSET 0xfff8
#define ND_FIRST_TYPE 133 /* router solicitation .. redirect */
#define ND_LAST_TYPE 137

char LICENSE[] SEC("license") = "GPL";

/* Not used by the program: the loader (plugins/module_utils/_program.py) reads it from .rodata. */
const volatile __u32 xdpfleet_schema_version = XF_SCHEMA_VERSION;

enum parse_result { PARSED_IP, ALWAYS_PASS, NOT_IP, MALFORMED };

struct packet {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 has_ports; /* TCP/UDP header present (not a non-first fragment) */
};

/* The match keeps what the program needs of the rule, not a pointer to it: a rule is looked up
 * in each slot's own code, while one lookup after the slots' paths join would see two maps at
 * one call, which the verifier cannot inline (it would become a helper call). */
struct scratch {
	struct packet pkt;
	__u32 position;         /* of the first matching rule so far; XF_NO_RULE: none */
	__u32 counter;          /* its hit-counter slot */
	__u32 action;
};

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

struct ipv6_ext {
	__u8 next;
	__u8 len;
	__be16 frag_off; /* fragment header only */
	__be32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xf_config);
} xf_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XF_REASONS);
	__type(key, __u32);
	__type(value, struct xf_datarec);
} xf_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XF_MAX_RULES);
	__type(key, __u32);
	__type(value, struct xf_datarec);
} xf_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} xf_events SEC(".maps");

/* Types user space decodes that no map declares (xf_events values, rule flags, the prefix map order): this
 * constant makes the object's BTF carry them, so that tests/unit/test_layout.py can check
 * plugins/module_utils/_layout.py against all of the program's layouts. */
const volatile struct {
	struct xf_event event;
	enum xf_rule_flags flags;
	enum xf_prefix_map prefix_map;
} xf_btf_anchor = {};

/* The per-packet working state lives in a per-CPU map value, not on the stack: the verifier
 * does not track what a map value holds, so the states that parsing leaves (IPv4 or IPv6,
 * ports or none, ...) meet again before classification instead of each being verified
 * through it (docs/PERFORMANCE.md has what a stack copy cost the verifier). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} xf_scratch SEC(".maps");

#define PREFIX_MAP(map_name, map_type, key_type)                   \
	struct {                                                   \
		__uint(type, map_type);                            \
		__uint(max_entries, XF_MAX_PREFIXES);              \
		__uint(map_flags, BPF_F_NO_PREALLOC);              \
		__type(key, key_type);                             \
		__type(value, struct xf_chain);                    \
	} map_name SEC(".maps")

#define ARRAY_MAP(map_name, entries, value_type)                   \
	struct {                                                   \
		__uint(type, BPF_MAP_TYPE_ARRAY);                  \
		__uint(max_entries, entries);                      \
		__type(key, __u32);                                \
		__type(value, value_type);                         \
	} map_name SEC(".maps")

/* One rule set; the program reads xf_config.active once per packet and then
 * uses only that slot's maps, so a rule-set switch is a single word write.
 * xf_gen_N holds the first position + 1 (0: none). */
#define RULESET_MAPS(n)                                                        \
	ARRAY_MAP(xf_rules_##n, XF_MAX_RULES, struct xf_rule);                 \
	ARRAY_MAP(xf_gen_##n, XF_GEN_ENTRIES, __u32);                         \
	ARRAY_MAP(xf_s4x_##n, XF_HOST_BUCKETS, struct xf_hosts4);              \
	ARRAY_MAP(xf_d4x_##n, XF_HOST_BUCKETS, struct xf_hosts4);              \
	PREFIX_MAP(xf_s4h_##n, BPF_MAP_TYPE_HASH, __u32);                      \
	PREFIX_MAP(xf_s4t_##n, BPF_MAP_TYPE_LPM_TRIE, struct xf_lpm4);         \
	PREFIX_MAP(xf_s6h_##n, BPF_MAP_TYPE_HASH, struct in6_addr);            \
	PREFIX_MAP(xf_s6t_##n, BPF_MAP_TYPE_LPM_TRIE, struct xf_lpm6);         \
	PREFIX_MAP(xf_d4h_##n, BPF_MAP_TYPE_HASH, __u32);                      \
	PREFIX_MAP(xf_d4t_##n, BPF_MAP_TYPE_LPM_TRIE, struct xf_lpm4);         \
	PREFIX_MAP(xf_d6h_##n, BPF_MAP_TYPE_HASH, struct in6_addr);            \
	PREFIX_MAP(xf_d6t_##n, BPF_MAP_TYPE_LPM_TRIE, struct xf_lpm6)

RULESET_MAPS(0);
RULESET_MAPS(1);

/* --- parsing ------------------------------------------------------------ */

static __always_inline int parse_l4(void *l4, void *end, struct packet *pkt)
{
	if (pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP) {
		struct udphdr *ports = l4; /* source and destination ports lead both */
		__u32 size = pkt->proto == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);

		if (l4 + size > end)
			return MALFORMED;
		pkt->sport = bpf_ntohs(ports->source);
		pkt->dport = bpf_ntohs(ports->dest);
		pkt->has_ports = 1;
	} else if (pkt->proto == IPPROTO_ICMP || pkt->proto == IPPROTO_ICMPV6) {
		__u8 *type = l4;

		if (l4 + 4 > end) /* type, code, checksum */
			return MALFORMED;
		if (pkt->family == 6 && pkt->proto == IPPROTO_ICMPV6 &&
		    *type >= ND_FIRST_TYPE && *type <= ND_LAST_TYPE)
			return ALWAYS_PASS;
	}
	return PARSED_IP;
}

static __always_inline int parse_ipv4(void *l3, void *end, struct packet *pkt)
{
	struct iphdr *ip = l3;
	__u32 header_size;

	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return MALFORMED;
	header_size = ip->ihl * 4;
	if (l3 + header_size > end)
		return MALFORMED;
	pkt->family = 4;
	pkt->proto = ip->protocol;
	pkt->src[0] = ip->saddr;
	pkt->dst[0] = ip->daddr;
	if (ip->frag_off & bpf_htons(IPV4_FRAG_OFFSET))
		return PARSED_IP;
	return parse_l4(l3 + header_size, end, pkt);
}

static __always_inline int is_ipv6_extension(__u8 header)
{
	return header == IPPROTO_HOPOPTS || header == IPPROTO_ROUTING || header == IPPROTO_DSTOPTS ||
	       header == IPPROTO_FRAGMENT || header == IPPROTO_AH;
}

static __always_inline int parse_ipv6(void *l3, void *end, struct packet *pkt)
{
	struct ipv6hdr *ip6 = l3;
	void *cursor = ip6 + 1;
	__u8 header;

	if (cursor > end || ip6->version != 6)
		return MALFORMED;
	pkt->family = 6;
	__builtin_memcpy(pkt->src, &ip6->saddr, 16);
	__builtin_memcpy(pkt->dst, &ip6->daddr, 16);
	header = ip6->nexthdr;
#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		struct ipv6_ext *ext = cursor;

		if (!is_ipv6_extension(header)) {
			pkt->proto = header;
			return parse_l4(cursor, end, pkt);
		}
		if ((void *)(ext + 1) > end) /* every extension header has 8 bytes at least */
			return MALFORMED;
		if (header == IPPROTO_FRAGMENT) {
			if (ext->frag_off & bpf_htons(IPV6_FRAG_OFFSET)) {
				pkt->proto = ext->next;
				return PARSED_IP;
			}
			cursor += sizeof(*ext);
		} else if (header == IPPROTO_AH) {
			cursor += (ext->len + 2) * 4;
		} else {
			cursor += (ext->len + 1) * 8;
		}
		if (cursor > end)
			return MALFORMED;
		header = ext->next;
	}
	return MALFORMED; /* longer extension chain than we walk: fail closed */
}

static __always_inline int parse(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	__be16 ethertype;

	if (l3 > end)
		return MALFORMED;
	ethertype = eth->h_proto;
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_tag *tag = l3;

		if (ethertype != bpf_htons(ETH_P_8021Q) && ethertype != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(tag + 1) > end)
			return MALFORMED;
		ethertype = tag->proto;
		l3 = tag + 1;
	}
	if (ethertype == bpf_htons(ETH_P_IP))
		return parse_ipv4(l3, end, pkt);
	if (ethertype == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(l3, end, pkt);
	if (ethertype == bpf_htons(ETH_P_ARP))
		return ALWAYS_PASS;
	return NOT_IP;
}

/* --- classification ------------------------------------------------------ */

static __always_inline void found(struct scratch *work, __u32 position, const struct xf_rule *rule)
{
	work->position = position;
	work->counter = rule->counter;
	work->action = rule->action;
}

static __always_inline int rule_matches(const struct xf_rule *rule, const struct packet *pkt)
{
	if ((rule->flags & XF_HAS_PROTO) && rule->proto != pkt->proto)
		return 0;
	if ((rule->flags & XF_HAS_PORT) &&
	    (!pkt->has_ports || pkt->dport < rule->port_lo || pkt->dport > rule->port_hi))
		return 0;
	if (rule->flags & XF_HAS_DST)
		return (pkt->dst[0] & rule->dst_mask[0]) == rule->dst[0] &&
		       (pkt->dst[1] & rule->dst_mask[1]) == rule->dst[1] &&
		       (pkt->dst[2] & rule->dst_mask[2]) == rule->dst[2] &&
		       (pkt->dst[3] & rule->dst_mask[3]) == rule->dst[3];
	return 1;
}


/* The position of the address's only /32 rule, from its host-table bucket (struct xf_hosts4); XF_CHAINED
 * when the hash map must say (the address has more rules, or its bucket overflows); XF_NO_RULE when no /32
 * rule names it. */
static __always_inline __u32 host_rule(void *hosts, __u32 address)
{
	__u32 index = (address * XF_HOST_HASH) >> (32 - XF_HOST_BUCKET_BITS), rule = XF_NO_RULE;
	struct xf_hosts4 *bucket = bpf_map_lookup_elem(hosts, &index);

	if (!bucket)
		return XF_CHAINED;
	for (__u32 i = 0; i < XF_BUCKET_HOSTS && i < bucket->count; i++) {
		if (bucket->addr[i] == address) {
			rule = bucket->pos[i];
			break;
		}
	}
	return rule == XF_NO_RULE && bucket->overflow ? XF_CHAINED : rule;
}

/* One side of an IPv4 packet in slot n: the host table first, the /32 hash map only where the table sends
 * the lookup on, the trie of shorter prefixes after a miss. */
#define HOST4_SIDE(n, side, SIDE)                                                                      \
	static __always_inline void match_##side##4_##n(const struct xf_slot_meta *meta, __u32 address,      \
							 struct scratch *work)                         \
	{                                                                                              \
		struct xf_lpm4 key = { .prefixlen = 32, .addr = address };                             \
		__u32 rule = XF_NO_RULE;                                                               \
		struct xf_chain *chain = 0;                                                            \
                                                                                                       \
		if (meta->prefixes[XF_##SIDE##4H])                                                     \
			rule = host_rule(&xf_##side##4x_##n, address);                                 \
		if (rule == XF_CHAINED)                                                                \
			chain = bpf_map_lookup_elem(&xf_##side##4h_##n, &address);                     \
		if (rule != XF_NO_RULE && rule != XF_CHAINED) {                                        \
			try_position_##n(rule, work);                                                  \
			return;                                                                        \
		}                                                                                      \
		if (!chain && meta->prefixes[XF_##SIDE##4T])                                           \
			chain = bpf_map_lookup_elem(&xf_##side##4t_##n, &key);                         \
		scan_chain_##n(chain, work);                                                           \
	}

/* Per-slot functions, stamped out twice so that every map reference is a
 * constant the verifier can inline array lookups for. */
#define RULESET_CLASSIFIER(n)                                                                  \
	static __always_inline void try_position_##n(__u32 position, struct scratch *work)     \
	{                                                                                      \
		struct xf_rule *rule;                                                          \
                                                                                               \
		if (position >= work->position)                                                \
			return;                                                                \
		rule = bpf_map_lookup_elem(&xf_rules_##n, &position);                          \
		if (rule && rule_matches(rule, &work->pkt))                                    \
			found(work, position, rule);                                           \
	}                                                                                      \
                                                                                               \
	/* Not written with try_position: returning at once on a match keeps the verifier's walk     \
	 * about a tenth shorter (docs/PERFORMANCE.md, load-time verification). */                     \
	static __always_inline void scan_chain_##n(const struct xf_chain *chain, struct scratch *work)     \
	{                                                                                              \
		if (!chain)                                                                            \
			return;                                                                        \
		for (__u32 i = 0; i < XF_CHAIN_MAX && i < chain->len; i++) {                           \
			__u32 position = chain->pos[i];                                                \
			struct xf_rule *rule;                                                          \
                                                                                                       \
			if (position >= work->position)                                                \
				return;                                                                \
			rule = bpf_map_lookup_elem(&xf_rules_##n, &position);                          \
			if (rule && rule_matches(rule, &work->pkt)) {                                  \
				found(work, position, rule);                                           \
				return;                                                                \
			}                                                                              \
		}                                                                                      \
	}                                                                                              \
                                                                                                       \
	/* The compiler folds the protocol rules of TCP and UDP into their port entries, so one \
	 * lookup finds the first general rule. */                                             \
	static __always_inline void match_general_##n(struct scratch *work)                    \
	{                                                                                      \
		const struct packet *pkt = &work->pkt;                                         \
		__u32 key = XF_GEN_PROTO + pkt->proto, position;                               \
		struct xf_rule *rule;                                                          \
		__u32 *first;                                                                  \
                                                                                               \
		if (pkt->has_ports)                                                            \
			key = (pkt->proto == IPPROTO_UDP ? XF_GEN_UDP : XF_GEN_TCP) + pkt->dport; \
		first = bpf_map_lookup_elem(&xf_gen_##n, &key);                                \
		if (!first || !*first)                                                         \
			return;                                                                \
		position = *first - 1;                                                         \
		rule = bpf_map_lookup_elem(&xf_rules_##n, &position);                          \
		if (rule)                                                                      \
			found(work, position, rule);                                           \
	}                                                                                      \
                                                                                               \
	HOST4_SIDE(n, s, S)                                                                    \
	HOST4_SIDE(n, d, D)                                                                    \
                                                                                               \
	static __always_inline void match_ipv4_##n(const struct xf_slot_meta *meta,            \
						   struct scratch *work)                       \
	{                                                                                      \
		match_s4_##n(meta, work->pkt.src[0], work);                                    \
		match_d4_##n(meta, work->pkt.dst[0], work);                                    \
	}                                                                                      \
	static __always_inline void match_ipv6_##n(const struct xf_slot_meta *meta,            \
						   struct scratch *work)                       \
	{                                                                                      \
		struct xf_lpm6 key = { .prefixlen = 128 };                                     \
		struct xf_chain *chain = 0;                                                    \
                                                                                               \
		if (meta->prefixes[XF_S6H])                                                    \
			chain = bpf_map_lookup_elem(&xf_s6h_##n, work->pkt.src);               \
		if (!chain && meta->prefixes[XF_S6T]) {                                        \
			__builtin_memcpy(key.addr, work->pkt.src, 16);                         \
			chain = bpf_map_lookup_elem(&xf_s6t_##n, &key);                        \
		}                                                                              \
		scan_chain_##n(chain, work);                                                   \
		chain = 0;                                                                     \
		if (meta->prefixes[XF_D6H])                                                    \
			chain = bpf_map_lookup_elem(&xf_d6h_##n, work->pkt.dst);               \
		if (!chain && meta->prefixes[XF_D6T]) {                                        \
			__builtin_memcpy(key.addr, work->pkt.dst, 16);                         \
			chain = bpf_map_lookup_elem(&xf_d6t_##n, &key);                        \
		}                                                                              \
		scan_chain_##n(chain, work);                                                   \
	}                                                                                      \
                                                                                               \
	static __always_inline void classify_##n(const struct xf_slot_meta *meta, struct scratch *work) \
	{                                                                                      \
		if (meta->general)                                                             \
			match_general_##n(work);                                               \
		if (work->pkt.family == 4)                                                     \
			match_ipv4_##n(meta, work);                                            \
		else                                                                           \
			match_ipv6_##n(meta, work);                                            \
	}

RULESET_CLASSIFIER(0)
RULESET_CLASSIFIER(1)

/* --- accounting ---------------------------------------------------------- */

static __always_inline void count(void *map, __u32 index, __u64 bytes)
{
	struct xf_datarec *rec = bpf_map_lookup_elem(map, &index);

	if (rec) {
		rec->packets++;
		rec->bytes += bytes;
	}
}

static __always_inline void sample_drop(struct xdp_md *ctx, const struct xf_config *config,
					const struct scratch *work, __u8 reason)
{
	__u32 rate = config->sample_rate;
	struct xf_event *event;

	if (!rate || bpf_get_prandom_u32() % rate)
		return;
	event = bpf_ringbuf_reserve(&xf_events, sizeof(*event), 0);
	if (!event)
		return;
	event->timestamp = bpf_ktime_get_ns();
	event->ifindex = ctx->ingress_ifindex;
	event->position = work->position;
	event->counter = work->position == XF_NO_RULE ? XF_NO_RULE : work->counter;
	event->family = work->pkt.family;
	event->proto = work->pkt.proto;
	event->action = XDP_DROP;
	event->reason = reason;
	event->sport = work->pkt.sport;
	event->dport = work->pkt.dport;
	event->reserved = 0;
	__builtin_memcpy(event->src, work->pkt.src, 16);
	__builtin_memcpy(event->dst, work->pkt.dst, 16);
	bpf_ringbuf_submit(event, 0);
}

SEC("xdp")
int xdpfleet_fw(struct xdp_md *ctx)
{
	struct scratch *work;
	struct xf_config *config;
	struct xf_slot_meta *meta;
	__u32 zero = 0, action, reason, slot;
	__u64 bytes = ctx->data_end - ctx->data;
	int parsed, matched = 0;

	work = bpf_map_lookup_elem(&xf_scratch, &zero);
	config = bpf_map_lookup_elem(&xf_config, &zero);
	if (!work || !config)
		return XDP_PASS;
	__builtin_memset(&work->pkt, 0, sizeof(work->pkt));
	work->position = XF_NO_RULE;
	parsed = parse(ctx, &work->pkt);
	slot = config->active & 1;
	meta = &config->slot[slot];
	action = meta->default_action ?: XDP_PASS;
	if (parsed == PARSED_IP) {
		if (slot)
			classify_1(meta, work);
		else
			classify_0(meta, work);
		matched = work->position != XF_NO_RULE;
		if (matched)
			action = work->action;
	} else if (parsed == ALWAYS_PASS) {
		action = XDP_PASS;
	} else if (parsed == MALFORMED) {
		action = XDP_DROP;
	}
	reason = parsed == MALFORMED ? XF_REASON_MALFORMED : action;
	count(&xf_stats, reason, bytes);
	if (matched)
		count(&xf_hits, work->counter, bytes);
	if (action == XDP_DROP)
		sample_drop(ctx, config, work, reason);
	return action;
}
