/* SPDX-License-Identifier: GPL-2.0 */
/* Map layouts shared by xdp_firewall.bpf.c and plugins/module_utils/_layout.py
 * (which describes them with named offsets: change both together, and bump
 * XF_SCHEMA_VERSION. The loader records the version of the maps it attaches, and
 * carries live maps over to an object of another version only when told to start
 * them empty: map_migration: reset). */
#ifndef XDP_FIREWALL_H
#define XDP_FIREWALL_H

#include <linux/types.h>

#ifndef XF_SCHEMA_VERSION /* -D sets it only where tests build objects of two versions */
#define XF_SCHEMA_VERSION 3
#endif
#define XF_CHAIN_MAX 16          /* positions per prefix entry */
#define XF_MAX_RULES 131072      /* rule positions and hit-counter slots */
#define XF_MAX_PREFIXES 131072   /* entries per prefix hash or trie */
#define XF_PORTS 65536
#define XF_GEN_TCP 0             /* xf_gen_N: [tcp ports][udp ports][protocols] */
#define XF_GEN_UDP XF_PORTS
#define XF_GEN_PROTO (2 * XF_PORTS)
#define XF_GEN_ENTRIES (XF_GEN_PROTO + 256)
#define XF_NO_RULE 0xffffffffU
#define XF_HOST_BUCKETS 32768    /* buckets of each IPv4 host table */
#define XF_HOST_BUCKET_BITS 15
#define XF_HOST_HASH 0x9e3779b1U /* bucket = (address * XF_HOST_HASH) >> (32 - XF_HOST_BUCKET_BITS), in 32 bits */
#define XF_BUCKET_HOSTS 7        /* addresses per bucket: a bucket is one 64-byte cache line */
#define XF_CHAINED 0xfffffffeU   /* the address has more than one rule: its chain is in the hash map */
#define XF_RATE_LIMIT 8          /* xf_rule.action of a rate limit (not an XDP action): over it drops, within it goes on */
#define XF_LIMITS_PER_PACKET 2   /* rate limits a packet can go through (the compiler refuses rule sets with more):
				  * bcc, which cannot call a global function, inlines each and verifies no more */
#define XF_LIMIT_SOURCES 65536   /* default entries of xf_limits; the loader may size it otherwise */
#define XF_LIMIT_SLOTS 65536     /* entries of xf_limit_slots: pairs at the owner's hash */
#define XF_LIMIT_SLOT_BITS 16    /* pair = ((word ^ tag * XF_HOST_HASH) * XF_HOST_HASH) >> (32 - bits) & ~1 */
#define XF_REASON_MALFORMED 5    /* stats index after the XDP action codes */
#define XF_REASONS 6
#define XF_SHADOW 2              /* in xf_config.active: the other slot holds a shadow set */
#define XF_EVENT_SHADOW 1        /* in xf_event.flags: a shadow set's would-be drop */

enum xf_rule_flags {
	XF_HAS_PROTO = 1,
	XF_HAS_PORT = 2,
	XF_HAS_DST = 4,
	XF_SRC_SET = 8,          /* found through the prefixes of a set; src holds its tag */
	XF_DST_SET = 16,         /* the same by destination; dst holds the tag */
};

/* xf_rule.more: the conditions of a rule's second half, which more_matches() checks. */
enum xf_more_flags {
	XF_SPORT = 1,
	XF_TCP_FLAGS = 2,
	XF_ICMP_TYPE = 4,
	XF_ICMP_CODE = 8,
	XF_LENGTH = 16,
	XF_TTL = 32,
	XF_EXPIRES = 64,
};

enum xf_limit_per { XF_PER_RULE, XF_PER_SOURCE };

/* xf_clock's entries, written at apply and at restore. */
enum xf_clock_entry {
	XF_WALL_MINUS_BOOT,      /* the wall clock minus the boot clock in ns: rules expire by the boot clock (which
				  * sleeps and steps do not move) at their wall-clock deadline */
	XF_TICK_NS,              /* ns per jiffy (the coarse clocks' resolution): rate limits tell the time from
				  * jiffies, which the verifier inlines, where a clock read is a helper call */
	XF_CLOCK_ENTRIES,
};

/* Prefix map order in xf_slot_meta.prefixes (names xf_<s|d><4|6><h|t>_N). */
enum xf_prefix_map { XF_S4H, XF_S4T, XF_S6H, XF_S6T, XF_D4H, XF_D4T, XF_D6H, XF_D6T, XF_PREFIX_MAPS };

struct xf_rule {                 /* xf_rules_N[position] */
	__u8 action;             /* XDP_DROP, XDP_PASS or XF_RATE_LIMIT */
	__u8 flags;              /* enum xf_rule_flags */
	__u8 proto;
	__u8 family;             /* 0 (any), 4 or 6 */
	__u8 src_len;            /* 0xff: no source */
	__u8 dst_len;            /* 0xff: no destination */
	__u16 more;              /* enum xf_more_flags */
	__u16 port_lo;
	__u16 port_hi;
	__u32 counter;           /* slot in xf_hits */
	__u32 src[4];            /* network order; IPv4 in src[0] */
	__u32 dst[4];            /* masked, network order */
	__u32 dst_mask[4];
	/* The second cache line: read only for a rule with `more` conditions or a rate limit. Ranges are
	 * inclusive, in host order. */
	__u16 sport_lo;
	__u16 sport_hi;
	__u16 length_lo;         /* IP total length (IPv6: payload length + 40) */
	__u16 length_hi;
	__u8 ttl_lo;             /* IPv4 TTL, IPv6 hop limit */
	__u8 ttl_hi;
	__u8 tcp_set;            /* TCP flags (header byte 13) that must be set */
	__u8 tcp_clear;          /* and that must be clear */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 limit_per;          /* enum xf_limit_per */
	__u8 limit_prefix4;      /* XF_PER_SOURCE: the source prefix one bucket covers */
	__u8 limit_prefix6;
	__u8 reserved[7];        /* the program ignores it; user space keeps the low bits of the rates here (_fw_model) */
	__u64 expires;           /* XF_EXPIRES: wall-clock deadline in ns since the epoch (see xf_clock) */
	__u64 packet_cost;       /* rate limit: ns per packet << 16; 0: no packet rate */
	__u64 packet_burst;      /* ns: how far ahead of now the packets may run */
	__u64 byte_cost;         /* ns per byte << 16; 0: no byte rate */
	__u64 byte_burst;
};

struct xf_chain {                /* value of every prefix hash/trie */
	__u32 len;
	__u32 pos[XF_CHAIN_MAX]; /* ascending rule positions */
};

/* xf_<s|d>4x_N[bucket]: the IPv4 host table, an index in front of the /32 hash map that the program reads
 * without a helper call. Its bucket holds up to XF_BUCKET_HOSTS of the addresses that hash to it, in
 * ascending order, with the position of each one's only rule; the hash map holds every address as before.
 * An address missing from a bucket without overflow is in no rule of the hash map. */
struct xf_hosts4 {
	__u32 count;
	__u32 overflow;          /* more addresses hash here than it holds: a miss looks in the hash map */
	__u32 addr[XF_BUCKET_HOSTS];  /* as the packet carries them (network order) */
	__u32 pos[XF_BUCKET_HOSTS];   /* the address's one rule, or XF_CHAINED */
};

/* xf_limits: one token bucket per rate-limit rule (per: rule) or per rule and source prefix (per: source).
 * Each rate is a virtual schedule: a packet is within the limit when, after adding its cost, the schedule
 * runs no more than the burst ahead of now. */
struct xf_limit_key {
	__u32 counter;           /* the rule's hit-counter slot, which it keeps across changes */
	__u32 family;            /* of the source; 0 for per: rule */
	__u32 src[4];            /* the source masked to the rule's prefix; 0 for per: rule */
};

struct xf_limit_state {          /* updated with compare-and-swap: LRU maps cannot hold a bpf_spin_lock */
	__u64 packets_due;       /* monotonic ns at which the packets let through so far are paid off */
	__u64 bytes_due;
};

/* xf_limit_slots[index]: the buckets the program finds without a helper call, in front of xf_limits. A bucket
 * whose key fits in 96 bits (per: rule, an IPv4 source, an IPv6 source prefix of 64 bits or less) is named
 * exactly by its owner words and lives in one of the two slots at the hash of its owner word, claimed by
 * compare-and-swap of that word from 0 and kept until user space frees its counter slot. Sources of longer IPv6
 * prefixes, and keys whose two slots are taken, keep their bucket in xf_limits. */
#define XF_OWNER_IPV6 0x80000000U /* in the tag of an IPv6 source's owner word */
struct xf_limit_slot {
	__u64 owner;             /* tag << 32 | word; 0: free. tag: counter + 1, | XF_OWNER_IPV6 for an IPv6 source;
				  * word: the source masked (network order), for IPv6 its first two words XORed, 0 for
				  * per: rule */
	__u64 owner6;            /* an IPv6 source's first two words masked (src[1] << 32 | src[0]); else 0 */
	struct xf_limit_state state;
};

struct xf_lpm4 {
	__u32 prefixlen;
	__u32 addr;
};

struct xf_lpm6 {
	__u32 prefixlen;
	__u32 addr[4];
};

struct xf_slot_meta {
	__u32 default_action;    /* 0 (unconfigured) behaves as XDP_PASS */
	__u32 rules;
	__u32 general;           /* rules with neither source nor destination */
	__u32 conditional;       /* of them, those in xf_cond_N (conditions beyond protocol and port, or a rate limit) */
	__u32 prefixes[XF_PREFIX_MAPS];
};

/* xf_shadow_stats: what a shadow set would have done, by reason (as xf_stats), then the packets on which it
 * disagrees with the enforced set. */
enum xf_shadow_count {
	XF_SHADOW_NEW_DROPS = XF_REASONS,   /* the shadow set would drop, the enforced set passed */
	XF_SHADOW_NEW_PASSES,               /* the shadow set would pass, the enforced set dropped */
	XF_SHADOW_COUNTS,
};

struct xf_config {               /* xf_config[0] */
	__u32 active;            /* bit 0: the rule-set slot the program enforces; | XF_SHADOW: the other slot holds
				  * a shadow set, which classifies every packet and counts what it would do */
	__u32 sample_rate;       /* 1 in N drops to xf_events; 0 = off */
	struct xf_slot_meta slot[2];
};

struct xf_datarec {
	__u64 packets;
	__u64 bytes;
};

struct xf_event {
	__u64 timestamp;         /* bpf_ktime_get_ns */
	__u32 ifindex;
	__u32 position;          /* XF_NO_RULE: default action or malformed */
	__u32 counter;
	__u8 family;
	__u8 proto;
	__u8 action;
	__u8 reason;
	__u16 sport;             /* host order; 0 without ports */
	__u16 dport;
	__u32 flags;             /* XF_EVENT_SHADOW */
	__u32 src[4];
	__u32 dst[4];
};

#endif
