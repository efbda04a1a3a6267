# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall's map layouts (bpf/xdp_firewall.h), described once.

Each C struct is a Layout: its fields in order with their struct codes, from which come its struct
format, its size and the offset of every field. tests/unit/test_layout.py checks every Layout against
the BTF of the compiled object, so C and Python cannot drift.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct
from collections import namedtuple

XF_SCHEMA_VERSION = 3  # bump with bpf/xdp_firewall.h when a layout below changes
CHAIN_MAX = 16
MAX_RULES = 131072
MAX_PREFIXES = 131072  # entries per prefix hash or trie
PORTS = 65536
GEN_TCP, GEN_UDP, GEN_PROTO = 0, PORTS, 2 * PORTS
GEN_ENTRIES = GEN_PROTO + 256
NO_RULE = 0xFFFFFFFF
NO_PREFIX = 0xFF
HAS_PROTO, HAS_PORT, HAS_DST, SRC_SET, DST_SET = 1, 2, 4, 8, 16
# xf_rule.more: the conditions of the rule's second half
MORE_SPORT, MORE_TCP_FLAGS, MORE_ICMP_TYPE, MORE_ICMP_CODE, MORE_LENGTH, MORE_TTL, MORE_EXPIRES = 1, 2, 4, 8, 16, 32, 64
RATE_LIMIT = 8  # xf_rule.action of a rate limit
PER_RULE, PER_SOURCE = 0, 1
CLOCK_WALL_MINUS_BOOT, CLOCK_TICK_NS = 0, 1  # xf_clock's entries
LIMITS_PER_PACKET = 2  # rate limits one packet may go through
LIMIT_SOURCES = 65536  # default entries of xf_limits
COST_SHIFT = 16  # packet_cost and byte_cost are ns << COST_SHIFT

XDP_ACTIONS = {"aborted": 0, "drop": 1, "pass": 2, "tx": 3, "redirect": 4}
ACTION_NAMES = dict((code, name) for name, code in XDP_ACTIONS.items())
REASONS = ("aborted", "drop", "pass", "tx", "redirect", "malformed")  # xf_stats indexes
# xf_shadow_stats indexes after REASONS: the shadow set would drop where the enforced one passed, and the reverse
SHADOW_NEW_DROPS, SHADOW_NEW_PASSES = len(REASONS), len(REASONS) + 1
SHADOW = 2  # in xf_config.active (bit 0: the enforced slot): the other slot holds a shadow set
EVENT_SHADOW = 1  # in xf_event.flags: a shadow set's would-be drop

# Prefix maps (xf_<side><family><h: hash of full-length addresses | t: LPM trie>_N), in xf_slot_meta order
PREFIX_MAPS = ("s4h", "s4t", "s6h", "s6t", "d4h", "d4t", "d6h", "d6t")
# The IPv4 host table in front of each IPv4 hash map (xf_<s|d>4x_N, struct xf_hosts4)
HOST_TABLES = {"s4h": "s4x", "d4h": "d4x"}
HOST_BUCKETS, HOST_BUCKET_BITS, HOST_HASH, BUCKET_HOSTS = 32768, 15, 0x9E3779B1, 7
CHAINED = 0xFFFFFFFE  # a host table's position for an address with more than one rule
RULESET_MAPS = ("rules", "gen", "cond") + PREFIX_MAPS + tuple(HOST_TABLES.values())  # one slot's maps: xf_<name>_<slot>


class Layout:
    """A C struct: fields (name, struct code) in order, little-endian without implicit padding."""

    def __init__(self, name, fields):
        self.name = name
        self.fields = tuple(fields)
        self.format = struct.Struct("<" + "".join(code for _name, code in self.fields))
        self.size = self.format.size
        self.Values = namedtuple(name, [field for field, _code in self.fields])
        self.offset, offset = {}, 0
        for field, code in self.fields:
            self.offset[field] = offset
            offset += struct.calcsize("<" + code)

    def unpack(self, raw):
        return self.Values._make(self.format.unpack(raw))

    def pack(self, *values, **fields):
        return self.format.pack(*(values or self.Values(**fields)))


RULE = Layout("xf_rule", (
    ("action", "B"), ("flags", "B"), ("proto", "B"), ("family", "B"), ("src_len", "B"), ("dst_len", "B"),
    ("more", "H"), ("port_lo", "H"), ("port_hi", "H"), ("counter", "I"),
    ("src", "16s"), ("dst", "16s"), ("dst_mask", "16s"),
    ("sport_lo", "H"), ("sport_hi", "H"), ("length_lo", "H"), ("length_hi", "H"), ("ttl_lo", "B"), ("ttl_hi", "B"),
    ("tcp_set", "B"), ("tcp_clear", "B"), ("icmp_type", "B"), ("icmp_code", "B"), ("limit_per", "B"),
    ("limit_prefix4", "B"), ("limit_prefix6", "B"), ("reserved", "7s"), ("expires", "Q"), ("packet_cost", "Q"),
    ("packet_burst", "Q"), ("byte_cost", "Q"), ("byte_burst", "Q")))
CHAIN = Layout("xf_chain", [("len", "I")] + [("pos%d" % index, "I") for index in range(CHAIN_MAX)])
HOSTS4 = Layout("xf_hosts4", [("count", "I"), ("overflow", "I")] + [("addr%d" % index, "I") for index in range(BUCKET_HOSTS)]
                + [("pos%d" % index, "I") for index in range(BUCKET_HOSTS)])
SLOT_META = Layout("xf_slot_meta", [("default_action", "I"), ("rules", "I"), ("general", "I"), ("conditional", "I")]
                   + [("prefixes_%s" % name, "I") for name in PREFIX_MAPS])
CONFIG_HEAD = Layout("xf_config_head", (("active", "I"), ("sample_rate", "I")))  # then slot[2]: SLOT_META
CONFIG_SIZE = CONFIG_HEAD.size + 2 * SLOT_META.size
DATAREC = Layout("xf_datarec", (("packets", "Q"), ("bytes", "Q")))
EVENT = Layout("xf_event", (
    ("timestamp", "Q"), ("ifindex", "I"), ("position", "I"), ("counter", "I"), ("family", "B"), ("proto", "B"),
    ("action", "B"), ("reason", "B"), ("sport", "H"), ("dport", "H"), ("flags", "I"), ("src", "16s"),
    ("dst", "16s")))
LIMIT_KEY = Layout("xf_limit_key", (("counter", "I"), ("family", "I"), ("src", "16s")))
LIMIT_STATE = Layout("xf_limit_state", (("packets_due", "Q"), ("bytes_due", "Q")))
LIMIT_SLOT = Layout("xf_limit_slot", (("owner", "Q"), ("owner6", "Q"), ("state", "%ds" % LIMIT_STATE.size)))
OWNER_IPV6 = 0x80000000  # in the tag of an IPv6 source's owner word
U64 = struct.Struct("<Q")  # values of xf_clock
U32 = struct.Struct("<I")  # keys of the array maps, values of xf_gen_N
ZERO_U32 = U32.pack(0)

EMPTY_RULE = bytes(RULE.size)  # a hole between rule positions: action 0 (no rule has it), never in an index
