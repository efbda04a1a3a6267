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
#define TCP_FLAGS_OFFSET 13
#define CAS_ATTEMPTS 3

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
	__u8 has_icmp;  /* ICMP/ICMPv6 header present */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 ttl;
	__u32 length;   /* IP total length; IPv6: payload length + 40, which may pass 65535 and then matches no range */
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

struct {                        /* by counter slot: what each rate limit let through */
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XF_MAX_RULES);
	__type(key, __u32);
	__type(value, struct xf_datarec);
} xf_passed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XF_LIMIT_SOURCES);
	__type(key, struct xf_limit_key);
	__type(value, struct xf_limit_state);
} xf_limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} xf_events SEC(".maps");

/* Types user space decodes that no map declares (xf_events values, rule flags, the prefix map order): this
 * constant makes the object's BTF carry them, so that tests/unit/test_layout.py can check
 * plugins/module_utils/_layout.py against all of the program's layouts. */
const volatile struct {
	struct xf_event event;
	struct xf_limit_state limit_state;
	enum xf_rule_flags flags;
	enum xf_more_flags more;
	enum xf_limit_per per;
	enum xf_clock_entry clock;
	enum xf_prefix_map prefix_map;
	enum xf_shadow_count shadow_count;
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

ARRAY_MAP(xf_clock, XF_CLOCK_ENTRIES, __u64);
struct {                        /* mmapable: user space reads and frees slots in place (_fw_buckets) */
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XF_LIMIT_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct xf_limit_slot);
} xf_limit_slots SEC(".maps");

#ifndef XF_NO_NEXT
/* The next program: xdp_program's hook: chained loads one there, and the firewall tail-calls it for every packet
 * it passes. Empty, the tail call falls through and the packet passes. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} xf_next SEC(".maps");
#endif

#ifndef XF_NO_SHADOW
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XF_SHADOW_COUNTS);
	__type(key, __u32);
	__type(value, struct xf_datarec);
} xf_shadow_stats SEC(".maps");

struct {                        /* by the shadow set's counter slots */
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XF_MAX_RULES);
	__type(key, __u32);
	__type(value, struct xf_datarec);
} xf_shadow_hits SEC(".maps");
#endif

/* One rule set; the program reads xf_config.active once per packet and then
 * uses only that slot's maps, so a rule-set switch is a single word write.
 * xf_gen_N holds the first position + 1 (0: none). */
#define RULESET_MAPS(n)                                                        \
	ARRAY_MAP(xf_rules_##n, XF_MAX_RULES, struct xf_rule);                 \
	ARRAY_MAP(xf_gen_##n, XF_GEN_ENTRIES, __u32);                         \
	ARRAY_MAP(xf_cond_##n, 1, struct xf_chain);                            \
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
		if (pkt->proto == IPPROTO_TCP)
			pkt->tcp_flags = ((__u8 *)l4)[TCP_FLAGS_OFFSET];
	} else if (pkt->proto == IPPROTO_ICMP || pkt->proto == IPPROTO_ICMPV6) {
		__u8 *type = l4;

		if (l4 + 4 > end) /* type, code, checksum */
			return MALFORMED;
		if (pkt->family == 6 && pkt->proto == IPPROTO_ICMPV6 &&
		    *type >= ND_FIRST_TYPE && *type <= ND_LAST_TYPE)
			return ALWAYS_PASS;
		pkt->has_icmp = 1;
		pkt->icmp_type = type[0];
		pkt->icmp_code = type[1];
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
	pkt->length = bpf_ntohs(ip->tot_len);
	pkt->ttl = ip->ttl;
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
	pkt->length = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
	pkt->ttl = ip6->hop_limit;
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

/* --- accounting ---------------------------------------------------------- */

static __always_inline void count(void *map, __u32 index, __u64 bytes)
{
	struct xf_datarec *rec = bpf_map_lookup_elem(map, &index);

	if (rec) {
		rec->packets++;
		rec->bytes += bytes;
	}
}

/* --- classification ------------------------------------------------------ */

static __always_inline void found(struct scratch *work, __u32 position, const struct xf_rule *rule)
{
	work->position = position;
	work->counter = rule->counter;
	work->action = rule->action;
}

static __always_inline int expired(__u64 deadline)
{
	__u32 entry = XF_WALL_MINUS_BOOT;
	__u64 *wall_minus_boot = bpf_map_lookup_elem(&xf_clock, &entry);

	return wall_minus_boot && bpf_ktime_get_boot_ns() + *wall_minus_boot >= deadline;
}

/* The conditions of a rule's second half. A global function: the verifier checks it once rather than at every
 * place a rule is matched, and rules without such conditions never call it. Its pointers are checked because
 * a global function's pointer arguments may be null as far as the verifier knows. */
__noinline int more_matches(const struct xf_rule *rule, const struct packet *pkt)
{
	__u16 more;

	if (!rule || !pkt)
		return 0;
	more = rule->more;
	if ((more & XF_SPORT) &&
	    (!pkt->has_ports || pkt->sport < rule->sport_lo || pkt->sport > rule->sport_hi))
		return 0;
	if ((more & XF_TCP_FLAGS) &&
	    (!pkt->has_ports || pkt->proto != IPPROTO_TCP || (pkt->tcp_flags & rule->tcp_set) != rule->tcp_set ||
	     (pkt->tcp_flags & rule->tcp_clear)))
		return 0;
	if ((more & XF_ICMP_TYPE) && (!pkt->has_icmp || pkt->icmp_type != rule->icmp_type))
		return 0;
	if ((more & XF_ICMP_CODE) && (!pkt->has_icmp || pkt->icmp_code != rule->icmp_code))
		return 0;
	if ((more & XF_LENGTH) && (pkt->length < rule->length_lo || pkt->length > rule->length_hi))
		return 0;
	if ((more & XF_TTL) && (pkt->ttl < rule->ttl_lo || pkt->ttl > rule->ttl_hi))
		return 0;
	return !(more & XF_EXPIRES) || !expired(rule->expires);
}

__noinline int conditions_match(const struct xf_rule *rule, const struct packet *pkt)
{
	if (!rule || !pkt)
		return 0;
	if ((rule->flags & XF_HAS_PROTO) && rule->proto != pkt->proto)
		return 0;
	if ((rule->flags & XF_HAS_PORT) &&
	    (!pkt->has_ports || pkt->dport < rule->port_lo || pkt->dport > rule->port_hi))
		return 0;
	if ((rule->flags & XF_HAS_DST) &&
	    ((pkt->dst[0] & rule->dst_mask[0]) != rule->dst[0] || (pkt->dst[1] & rule->dst_mask[1]) != rule->dst[1] ||
	     (pkt->dst[2] & rule->dst_mask[2]) != rule->dst[2] || (pkt->dst[3] & rule->dst_mask[3]) != rule->dst[3]))
		return 0;
	return !rule->more || more_matches(rule, pkt);
}

/* A packet's first classification (from a constant 0) takes a rule without conditions, the most common kind,
 * without a call. reclassify(), whose `from` is a variable, calls conditions_match() for every rule, so that the
 * verifier does not walk that shortcut through it again: clang folds __builtin_constant_p after inlining. */
static __always_inline int rule_matches(const struct xf_rule *rule, const struct packet *pkt, __u32 from)
{
	if (__builtin_constant_p(from) && !from && !(rule->flags & (XF_HAS_PROTO | XF_HAS_PORT | XF_HAS_DST)) &&
	    !rule->more)
		return 1;
	return conditions_match(rule, pkt);
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
							 struct scratch *work, __u32 from)             \
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
			try_position_##n(rule, work, from);                                            \
			return;                                                                        \
		}                                                                                      \
		if (!chain && meta->prefixes[XF_##SIDE##4T])                                           \
			chain = bpf_map_lookup_elem(&xf_##side##4t_##n, &key);                         \
		scan_chain_##n(chain, work, from);                                                     \
	}

/* Per-slot functions, stamped out twice so that every map reference is a
 * constant the verifier can inline array lookups for. */
#define RULESET_CLASSIFIER(n)                                                                  \
	static __always_inline void try_position_##n(__u32 position, struct scratch *work,     \
						     __u32 from)                                       \
	{                                                                                      \
		struct xf_rule *rule;                                                          \
                                                                                               \
		if (position >= work->position || position < from)                             \
			return;                                                                \
		rule = bpf_map_lookup_elem(&xf_rules_##n, &position);                          \
		if (rule && rule_matches(rule, &work->pkt, from))                                    \
			found(work, position, rule);                                           \
	}                                                                                      \
                                                                                               \
	/* Not written with try_position: returning at once on a match keeps the verifier's walk     \
	 * about a tenth shorter (docs/PERFORMANCE.md, load-time verification). */                     \
	static __always_inline void scan_chain_##n(const struct xf_chain *chain, struct scratch *work,     \
						   __u32 from)                                                 \
	{                                                                                              \
		if (!chain)                                                                            \
			return;                                                                        \
		for (__u32 i = 0; i < XF_CHAIN_MAX && i < chain->len; i++) {                           \
			__u32 position = chain->pos[i];                                                \
			struct xf_rule *rule;                                                          \
                                                                                                       \
			if (position >= work->position)                                                \
				return;                                                                \
			if (position < from)                                                           \
				continue;                                                              \
			rule = bpf_map_lookup_elem(&xf_rules_##n, &position);                          \
			if (rule && rule_matches(rule, &work->pkt, from)) {                                  \
				found(work, position, rule);                                           \
				return;                                                                \
			}                                                                              \
		}                                                                                      \
	}                                                                                              \
                                                                                                       \
	/* The compiler folds the protocol rules of TCP and UDP into their port entries, so one \
	 * lookup finds the first general rule that takes every packet of its port or protocol; \
	 * general rules with further conditions are in xf_cond_N, scanned as a chain. */       \
	static __always_inline void match_general_##n(struct scratch *work, __u32 from)        \
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
		if (position < from)                                                           \
			return;                                                                \
		rule = bpf_map_lookup_elem(&xf_rules_##n, &position);                          \
		if (rule)                                                                      \
			found(work, position, rule);                                           \
	}                                                                                      \
                                                                                               \
	static __always_inline void match_conditional_##n(struct scratch *work, __u32 from)    \
	{                                                                                      \
		__u32 zero = 0;                                                                \
                                                                                               \
		scan_chain_##n(bpf_map_lookup_elem(&xf_cond_##n, &zero), work, from);          \
	}                                                                                      \
                                                                                               \
	HOST4_SIDE(n, s, S)                                                                    \
	HOST4_SIDE(n, d, D)                                                                    \
                                                                                               \
	static __always_inline void match_ipv4_##n(const struct xf_slot_meta *meta,            \
						   struct scratch *work, __u32 from)           \
	{                                                                                      \
		match_s4_##n(meta, work->pkt.src[0], work, from);                              \
		match_d4_##n(meta, work->pkt.dst[0], work, from);                              \
	}                                                                                      \
	static __always_inline void match_ipv6_##n(const struct xf_slot_meta *meta,            \
						   struct scratch *work, __u32 from)           \
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
		scan_chain_##n(chain, work, from);                                             \
		chain = 0;                                                                     \
		if (meta->prefixes[XF_D6H])                                                    \
			chain = bpf_map_lookup_elem(&xf_d6h_##n, work->pkt.dst);               \
		if (!chain && meta->prefixes[XF_D6T]) {                                        \
			__builtin_memcpy(key.addr, work->pkt.dst, 16);                         \
			chain = bpf_map_lookup_elem(&xf_d6t_##n, &key);                        \
		}                                                                              \
		scan_chain_##n(chain, work, from);                                             \
	}                                                                                      \
                                                                                               \
	/* Finds the first rule at `from` or after that matches the packet. */                 \
	static __always_inline void classify_##n(const struct xf_slot_meta *meta, struct scratch *work, \
						 __u32 from)                                   \
	{                                                                                      \
		if (meta->general)                                                             \
			match_general_##n(work, from);                                         \
		if (meta->conditional)                                                         \
			match_conditional_##n(work, from);                                     \
		if (work->pkt.family == 4)                                                     \
			match_ipv4_##n(meta, work, from);                                      \
		else                                                                           \
			match_ipv6_##n(meta, work, from);                                      \
	}

RULESET_CLASSIFIER(0)
RULESET_CLASSIFIER(1)

/* Finds the first rule at `from` or after that matches; the first classification of a packet passes a constant 0,
 * which compiles away the comparisons only a classification after a rate limit needs. */
static __always_inline void classify(__u32 slot, const struct xf_slot_meta *meta, struct scratch *work, __u32 from)
{
	if (slot)
		classify_1(meta, work, from);
	else
		classify_0(meta, work, from);
}

/* The classification again, from `from` on. A global function: the verifier checks the classifier once
 * more, not once for every rate limit a packet may go through. */
__noinline int reclassify(__u32 slot, __u32 from)
{
	__u32 zero = 0;
	struct scratch *work = bpf_map_lookup_elem(&xf_scratch, &zero);
	struct xf_config *config = bpf_map_lookup_elem(&xf_config, &zero);

	if (!work || !config)
		return 0;
	slot &= 1;
	work->position = XF_NO_RULE;
	classify(slot, &config->slot[slot], work, from);
	return 0;
}

/* --- rate limits --------------------------------------------------------- */

/* The source address word i masked to the bucket's prefix of prefix bits (network order). */
static __always_inline __u32 masked_word(const struct packet *pkt, int i, __u32 prefix)
{
	__u32 bits = prefix > 32 * i ? prefix - 32 * i : 0;

	return bits ? pkt->src[i] & bpf_htonl(0xffffffffU << (32 - (bits > 32 ? 32 : bits))) : 0;
}

/* What the rate limiting needs of a rate-limit rule, copied out of the rule by limit_at(). */
struct limit {
	__u64 packet_cost;
	__u64 packet_burst;
	__u64 byte_cost;
	__u64 byte_burst;
	__u32 counter;
	__u8 per;
	__u8 prefix4;
	__u8 prefix6;
};

static __always_inline __u32 limit_prefix(const struct limit *limit, const struct packet *pkt)
{
	if (limit->per != XF_PER_SOURCE)
		return 0;
	return pkt->family == 4 ? limit->prefix4 : limit->prefix6;
}

static __always_inline void limit_key(struct xf_limit_key *key, const struct limit *limit, const struct packet *pkt)
{
	__u32 prefix = limit_prefix(limit, pkt);

	key->counter = limit->counter;
	key->family = limit->per == XF_PER_SOURCE ? pkt->family : 0;
#pragma unroll
	for (int i = 0; i < 4; i++)
		key->src[i] = masked_word(pkt, i, prefix);
}

/* Where a rate's schedule stands once a packet of this cost is let through. */
static __always_inline __u64 due_after(__u64 due, __u64 now, __u64 cost)
{
	return (due > now ? due : now) + cost;
}

/* Charges a rate with a packet's cost by compare-and-swap, again when another CPU charged it in between; a
 * packet that loses CAS_ATTEMPTS times goes uncharged rather than dropped. */
static __always_inline void charge(__u64 *due, __u64 now, __u64 cost)
{
#pragma unroll
	for (int i = 0; i < CAS_ATTEMPTS; i++) {
		__u64 seen = *due;

		if (__sync_val_compare_and_swap(due, seen, due_after(seen, now, cost)) == seen)
			return;
	}
}

static __always_inline int owns(const struct xf_limit_slot *slot, __u64 owner, __u64 owner6)
{
	return slot && slot->owner == owner && slot->owner6 == owner6;
}

/* 1 when the slot was free and is now the owner's. Another CPU may have just claimed it for the same owner word:
 * then it is this key's if its owner6 says so (not yet written, the key goes to the other slot or xf_limits,
 * which lets more through, never less). */
static __always_inline int claim(struct xf_limit_slot *slot, __u64 owner, __u64 owner6)
{
	__u64 seen;

	if (!slot || slot->owner)
		return 0;
	seen = __sync_val_compare_and_swap(&slot->owner, 0, owner);
	if (seen)
		return seen == owner && slot->owner6 == owner6;
	slot->owner6 = owner6;
	return 1;
}

/* The bucket of the packet's key in xf_limit_slots (its owner words: struct xf_limit_slot), claiming a free slot
 * of its pair for it; NULL when the pair is taken by others. Not for an IPv6 source prefix longer than 64 bits.
 * Both slots are looked at before either is claimed, so that a key has one bucket. */
static __always_inline struct xf_limit_state *slot_bucket(const struct limit *limit, const struct packet *pkt)
{
	__u32 tag = limit->counter + 1, word = masked_word(pkt, 0, limit_prefix(limit, pkt)), high;
	__u64 owner, owner6 = 0;
	__u32 pair, next;
	struct xf_limit_slot *first, *second;

	if (pkt->family == 6 && limit->per == XF_PER_SOURCE) {
		high = masked_word(pkt, 1, limit->prefix6);
		owner6 = (__u64)high << 32 | word;
		tag |= XF_OWNER_IPV6;
		word ^= high;
	}
	owner = (__u64)tag << 32 | word;
	pair = ((word ^ tag * XF_HOST_HASH) * XF_HOST_HASH) >> (32 - XF_LIMIT_SLOT_BITS) & ~1U;
	next = pair + 1;
	first = bpf_map_lookup_elem(&xf_limit_slots, &pair);
	second = bpf_map_lookup_elem(&xf_limit_slots, &next);

	if (owns(first, owner, owner6))
		return &first->state;
	if (owns(second, owner, owner6))
		return &second->state;
	if (claim(first, owner, owner6))
		return &first->state;
	if (claim(second, owner, owner6))
		return &second->state;
	return NULL;
}

/* The bucket of this key in xf_limits, made (full) when it has none; NULL when the map cannot hold it. */
static __always_inline struct xf_limit_state *lru_bucket(const struct xf_limit_key *key)
{
	struct xf_limit_state *state = bpf_map_lookup_elem(&xf_limits, key), fresh = {};

	if (state)
		return state;
	bpf_map_update_elem(&xf_limits, key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&xf_limits, key);
}

/* The time by which rate limits run, in ns: jiffies, at the resolution of the coarse clocks. A bucket sees the
 * time up to a tick late, which never lets more through than a precise clock would and leaves the long-run
 * rate as it is. 0 until user space has written the tick's length. */
static __always_inline __u64 limit_clock(void)
{
	__u32 entry = XF_TICK_NS;
	__u64 *tick_ns = bpf_map_lookup_elem(&xf_clock, &entry);

	return tick_ns ? bpf_jiffies64() * *tick_ns : 0;
}

/* 1 when a packet of this many bytes is over the rate limit, whose bucket is state; else charges the packet to
 * the bucket. */
static __always_inline int over_bucket(struct xf_limit_state *state, const struct limit *limit, __u64 now,
				       __u32 bytes)
{
	__u64 packet_cost = limit->packet_cost >> 16, byte_cost = (limit->byte_cost * bytes) >> 16;

	if ((limit->packet_cost && due_after(state->packets_due, now, packet_cost) - now > limit->packet_burst) ||
	    (limit->byte_cost && due_after(state->bytes_due, now, byte_cost) - now > limit->byte_burst))
		return 1;
	if (limit->packet_cost)
		charge(&state->packets_due, now, packet_cost);
	if (limit->byte_cost)
		charge(&state->bytes_due, now, byte_cost);
	return 0;
}

/* 1 when the packet is over the rate limit; else charges the packet to it. A global function, which the
 * verifier checks once. */
__noinline int over_limit(const struct limit *limit, const struct packet *pkt, __u32 bytes)
{
	struct xf_limit_state *state = NULL;
	struct xf_limit_key key = {};
	__u64 now = limit_clock();

	if (!limit || !pkt || !now)
		return 0;
	if (pkt->family == 4 || limit->per != XF_PER_SOURCE || limit->prefix6 <= 64)
		state = slot_bucket(limit, pkt);
	if (!state) {
		limit_key(&key, limit, pkt);
		state = lru_bucket(&key);
	}
	/* with nowhere to keep the source's bucket, the packet is let through rather than dropped */
	return state ? over_bucket(state, limit, now, bytes) : 0;
}

/* Copies the rate limit at a position of a slot out of its rule; 0 when there is none. The empty asm keeps clang
 * from joining the two lookups into one call that could see either map, which the verifier does not inline (a
 * helper call); the copy lets the verifier walk the rate limiting once for both slots. */
static __always_inline int limit_at(__u32 slot, __u32 position, struct limit *limit)
{
	const struct xf_rule *rule;

	if (slot) {
		rule = bpf_map_lookup_elem(&xf_rules_1, &position);
		asm volatile("" ::: "memory");
	} else {
		rule = bpf_map_lookup_elem(&xf_rules_0, &position);
	}
	if (!rule)
		return 0;
	limit->packet_cost = rule->packet_cost;
	limit->packet_burst = rule->packet_burst;
	limit->byte_cost = rule->byte_cost;
	limit->byte_burst = rule->byte_burst;
	limit->counter = rule->counter;
	limit->per = rule->limit_per;
	limit->prefix4 = rule->limit_prefix4;
	limit->prefix6 = rule->limit_prefix6;
	return 1;
}

/* A rate limit is not a verdict: within its limit the packet goes on to the rules after it. The compiler
 * refuses rule sets in which a packet could match more than XF_LIMITS_PER_PACKET rate limits. A shadow set's
 * rate limits charge no bucket: every packet goes on. */
static __always_inline void go_through_limits(__u32 slot, struct scratch *work, __u32 bytes, int shadow)
{
#pragma unroll
	for (int i = 0; i < XF_LIMITS_PER_PACKET; i++) {
		struct limit limit;

		if (work->position == XF_NO_RULE || work->action != XF_RATE_LIMIT)
			return;
		if (!shadow) {
			if (!limit_at(slot, work->position, &limit) || over_limit(&limit, &work->pkt, bytes)) {
				work->action = XDP_DROP;
				return;
			}
			count(&xf_passed, work->counter, bytes);
		}
		reclassify(slot, (work->position & (XF_MAX_RULES - 1)) + 1); /* a mask that changes no position but
									   * shows the verifier `from` > 0 where
									   * bcc inlines reclassify() */
	}
}

static __always_inline void sample_drop(struct xdp_md *ctx, const struct xf_config *config,
					const struct scratch *work, __u8 reason, __u32 flags)
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
	event->flags = flags;
	__builtin_memcpy(event->src, work->pkt.src, 16);
	__builtin_memcpy(event->dst, work->pkt.dst, 16);
	bpf_ringbuf_submit(event, 0);
}

/* The verdict of the rule set in a slot on a packet: classifies a parsed one into work (position XF_NO_RULE, or a
 * rate limit still, when no rule decided); `matched` says whether a rule decided. The enforced set classifies
 * inline; a shadow set calls reclassify(), which the verifier has checked already. The default action is read
 * before the classification and a rule's verdict taken right after it: a verdict taken after the branches on the
 * parse's outcome, for all of them, made an allowed packet a few percent slower. */
static __always_inline __u32 verdict(__u32 slot, const struct xf_slot_meta *meta, struct scratch *work, int parsed,
				     __u32 bytes, int shadow, int *matched)
{
	__u32 action = meta->default_action ?: XDP_PASS;

	*matched = 0;
	if (parsed == PARSED_IP) {
		if (shadow)
			reclassify(slot, 0);
		else
			classify(slot, meta, work, 0);
		go_through_limits(slot, work, bytes, shadow);
		*matched = work->position != XF_NO_RULE && work->action != XF_RATE_LIMIT;
		if (*matched)
			action = work->action;
	} else if (parsed == ALWAYS_PASS) {
		action = XDP_PASS;
	} else if (parsed == MALFORMED) {
		action = XDP_DROP;
	}
	return action;
}

#ifndef XF_NO_SHADOW
/* The shadow set's classification of the packet in xf_scratch, which the enforced set has decided already: counts
 * what it would do and samples its would-be drops. A shadow rate limit charges no bucket: every packet goes on
 * to the rules after it. A global function, which the verifier checks once; its classification is
 * reclassify()'s, checked already. */
__noinline int shadow(struct xdp_md *ctx, int parsed, __u32 enforced)
{
	__u32 zero = 0, slot, action, reason;
	struct scratch *work = bpf_map_lookup_elem(&xf_scratch, &zero);
	struct xf_config *config = bpf_map_lookup_elem(&xf_config, &zero);
	__u64 bytes;
	int matched;

	if (!ctx || !work || !config)
		return 0;
	bytes = ctx->data_end - ctx->data;
	slot = (config->active & 1) ^ 1;
	action = verdict(slot, &config->slot[slot], work, parsed, bytes, 1, &matched);
	reason = parsed == MALFORMED ? XF_REASON_MALFORMED : action;
	count(&xf_shadow_stats, reason, bytes);
	if (action == XDP_DROP && enforced != XDP_DROP)
		count(&xf_shadow_stats, XF_SHADOW_NEW_DROPS, bytes);
	else if (action != XDP_DROP && enforced == XDP_DROP)
		count(&xf_shadow_stats, XF_SHADOW_NEW_PASSES, bytes);
	if (matched)
		count(&xf_shadow_hits, work->counter, bytes);
	if (action == XDP_DROP)
		sample_drop(ctx, config, work, reason, XF_EVENT_SHADOW);
	return 0;
}
#endif

SEC("xdp")
int xdpfleet_fw(struct xdp_md *ctx)
{
	struct scratch *work;
	struct xf_config *config;
	__u32 zero = 0, action, reason, active, slot;
	__u64 bytes = ctx->data_end - ctx->data;
	int parsed, matched;

	work = bpf_map_lookup_elem(&xf_scratch, &zero);
	config = bpf_map_lookup_elem(&xf_config, &zero);
	if (!work || !config)
		return XDP_PASS;
	__builtin_memset(&work->pkt, 0, sizeof(work->pkt));
	work->position = XF_NO_RULE;
	parsed = parse(ctx, &work->pkt);
	/* The classification reads the packet's fields back from work rather than from the registers of each parse
	 * path, so that the verifier's walks of those paths meet before it and go on as one. */
	asm volatile("" ::: "memory");
	active = config->active;
	slot = active & 1;
	action = verdict(slot, &config->slot[slot], work, parsed, bytes, 0, &matched);
	reason = parsed == MALFORMED ? XF_REASON_MALFORMED : action;
	count(&xf_stats, reason, bytes);
	if (matched)
		count(&xf_hits, work->counter, bytes);
	if (action == XDP_DROP)
		sample_drop(ctx, config, work, reason, 0);
#ifndef XF_NO_SHADOW
	if (active & XF_SHADOW)
		shadow(ctx, parsed, action);
#endif
#ifndef XF_NO_NEXT
	if (action == XDP_PASS)
		bpf_tail_call(ctx, &xf_next, 0);
#endif
	return action;
}
