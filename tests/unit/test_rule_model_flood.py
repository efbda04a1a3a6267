"""Issue 19's rule keys in the rule model: parsing and its messages, canonical forms, the packed second half
both ways, the fast path's fallback, and rule lines."""

import random

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_model, _layout
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import RuleError

NOW = 1764957600  # 2025-12-05T18:00:00Z
LATER = "2026-12-05T18:00:00Z"


def parse(item, now=NOW):
    return _fw_model.parse_rule(item, "config[3]", now)


def errors_of(item, now=NOW):
    with pytest.raises(RuleError) as error:
        parse(item, now)
    return error.value.errors


SYN = {"action": "rate_limit", "protocol": "tcp", "tcp_flags": "syn,!ack", "pps": 500}


@pytest.mark.parametrize("item,message", [
    (dict(SYN, protocol="udp"), "config[3].tcp_flags: needs protocol: tcp (TCP flags are in the TCP header)"),
    ({"action": "drop", "tcp_flags": "syn"}, "config[3].tcp_flags: needs protocol: tcp"),
    ({"action": "drop", "protocol": "tcp", "tcp_flags": "syn,!syn"}, "config[3].tcp_flags: syn is both set and clear"),
    ({"action": "drop", "protocol": "tcp", "tcp_flags": "syn,push"}, "config[3].tcp_flags: 'push' is not a TCP flag"),
    ({"action": "drop", "protocol": "tcp", "tcp_flags": ""}, "config[3].tcp_flags: '' is not a list of TCP flags"),
    ({"action": "drop", "protocol": "icmp", "icmp_type": 300}, "config[3].icmp_type: 300 is not an ICMP type (0-255)"),
    ({"action": "drop", "protocol": "icmp", "icmp_type": 3, "icmp_code": 256},
     "config[3].icmp_code: 256 is not an ICMP code (0-255)"),
    ({"action": "drop", "protocol": "udp", "icmp_type": 8}, "config[3].icmp_type: needs protocol: icmp or icmpv6"),
    ({"action": "drop", "protocol": "icmp", "icmp_code": 0}, "config[3].icmp_code: needs icmp_type"),
    ({"action": "drop", "protocol": "icmpv6", "icmp_type": 135}, "config[3].icmp_type: 135 is neighbour discovery"),
    ({"action": "drop", "protocol": "icmp", "source_port": 53}, "config[3].source_port: ports need protocol tcp or udp"),
    ({"action": "drop", "source_port": "70000"}, "config[3].source_port: 70000 is not a source port (0-65535"),
    ({"action": "drop", "length": "100-50"}, "config[3].length: 100-50 is not an IP total length (0-65535"),
    ({"action": "drop", "ttl": 256}, "config[3].ttl: 256 is not a TTL (0-255"),
    (dict(SYN, pps=0), "config[3].pps: 0 is not a packet rate in packets per second (1-1000000000)"),
    ({"action": "rate_limit", "bps": 7}, "config[3].bps: 7 is not a bit rate in bits per second (8-"),
    (dict(SYN, burst=0), "config[3].burst: 0 is not a burst in packets (1-3600000000000: at least one packet)"),
    ({"action": "rate_limit", "bps": 10 ** 6, "burst_bytes": 1000},
     "config[3].burst_bytes: 1000 is not a burst in bytes (1514-"),
    (dict(SYN, burst=500 * 3600 + 1), "config[3].burst: 1800001 packets are more than 3600 s at 500 pps"),
    ({"action": "rate_limit", "bps": 10 ** 6, "burst_bytes": 10 ** 9},
     "config[3].burst_bytes: 1000000000 bytes are more than 3600 s at 1000000 bps"),
    ({"action": "rate_limit", "protocol": "udp"}, "config[3]: action rate_limit needs pps (packets per second) and/or bps"),
    ({"action": "drop", "pps": 500}, "config[3].pps: only for action: rate_limit (this rule's action is drop)"),
    ({"action": "pass", "per": "rule"}, "config[3].per: only for action: rate_limit (this rule's action is pass)"),
    (dict(SYN, burst_bytes=2000), "config[3].burst_bytes: needs bps"),
    ({"action": "rate_limit", "bps": 10 ** 6, "burst": 5}, "config[3].burst: needs pps"),
    (dict(SYN, per="rule", per_prefix=24), "config[3].per_prefix: only with per: source"),
    (dict(SYN, per="rule", per_prefix6=48), "config[3].per_prefix6: only with per: source"),
    (dict(SYN, per="host"), "config[3].per: 'host' is not a bucket (use source"),
    (dict(SYN, per_prefix=33), "config[3].per_prefix: 33 is not an IPv4 prefix length (1-32)"),
    (dict(SYN, per_prefix6=0), "config[3].per_prefix6: 0 is not an IPv6 prefix length (1-128)"),
    ({"action": "drop", "expires_at": "tomorrow"}, "config[3].expires_at: 'tomorrow' is not an RFC 3339 time"),
    ({"action": "drop", "expires_at": "2026-12-05T18:00:00"}, "config[3].expires_at: '2026-12-05T18:00:00' is not an"),
    ({"action": "drop", "expires_at": "2026-02-30T18:00:00Z"}, "config[3].expires_at: '2026-02-30T18:00:00Z' is not an "
                                                               "RFC 3339 time (day is out of range for month)"),
    ({"action": "drop", "expires_at": "2025-12-05T17:59:59Z"},
     "config[3].expires_at: 2025-12-05T17:59:59Z is in the past (now is 2025-12-05T18:00:00Z)"),
    ({"action": "drop", "expires_at": "2600-01-01T00:00:00Z"}, "config[3].expires_at: the deadline is after 2554-"),
    ({"action": "drop", "expires_at": LATER, "expires_after": 60},
     "config[3]: expires_at and expires_after both given (keep one)"),
    ({"action": "drop", "expires_after": 0}, "config[3].expires_after: 0 is not a number of seconds (1-"),
    ({"action": "drop", "ttl": True}, "config[3].ttl: True is not a TTL"),
])
def test_each_bad_value_is_refused_naming_the_field_and_the_fix(item, message):
    assert any(error.startswith(message) for error in errors_of(item)), errors_of(item)


def test_all_errors_of_a_rule_come_together():
    errors = errors_of({"action": "drop", "protocol": "udp", "tcp_flags": "syn", "icmp_type": 300, "pps": 5,
                        "expires_at": "2020-01-01T00:00:00Z"})
    assert [error.split(":")[0] for error in errors] == [
        "config[3].icmp_type", "config[3].tcp_flags", "config[3].pps", "config[3].expires_at"]


def test_a_field_that_fails_is_not_blamed_again_in_combinations():
    assert errors_of(dict(SYN, pps=0)) == [
        "config[3].pps: 0 is not a packet rate in packets per second (1-1000000000)"]
    assert [error.split(":")[0] for error in errors_of({"action": "reject", "pps": 5})] == ["config[3].action"]


CANONICAL = [
    {"action": "drop", "protocol": "udp", "source_port": 53, "length": "512-65535"},
    {"action": "drop", "protocol": "tcp", "source_port": "0-1023", "tcp_flags": "fin,syn,!rst,!psh,ack,urg,ece,!cwr"},
    {"action": "pass", "source": "198.18.0.0/15", "protocol": "icmp", "icmp_type": 3, "icmp_code": 4, "ttl": "0-1"},
    {"action": "drop", "destination": "2001:db8::/32", "protocol": "icmpv6", "icmp_type": 128, "ttl": 255,
     "expires_at": LATER},
    {"action": "rate_limit", "protocol": "tcp", "tcp_flags": "syn,!ack", "pps": 500, "burst": 50, "per": "source",
     "per_prefix": 32, "per_prefix6": 64},
    {"action": "rate_limit", "source": "198.18.0.0/16", "protocol": "udp", "source_port": 53, "pps": 9999991,
     "burst": 3, "bps": 987654321987, "burst_bytes": 123456789, "per": "source", "per_prefix": 24, "per_prefix6": 48,
     "expires_at": LATER},
    {"action": "rate_limit", "source_set": "amplifiers", "bps": 8, "burst_bytes": 1514, "per": "rule"},
    {"action": "rate_limit", "destination": "2001:db8::1/128", "pps": 1, "burst": 1, "per": "rule",
     "expires_at": "2554-07-21T23:34:33Z"},
]


@pytest.mark.parametrize("item", CANONICAL)
def test_canonical_rules_are_fixed_points_and_round_trip_through_the_packed_rule(item):
    rule = parse(item)
    assert rule.to_dict() == item
    packed = _fw_model.pack_rule(rule)
    assert _fw_model.canonical_of_packed(packed, {_fw_model.set_tag("amplifiers"): "amplifiers"}) == item
    assert _fw_model.decode_rule(packed, {_fw_model.set_tag("amplifiers"): "amplifiers"})[0] == rule
    assert _fw_model.pack_canonical(tuple(item.get(key) for key in _fw_model.RULE_KEYS)) is None


def test_loose_forms_are_canonicalised():
    rule = parse({"action": "rate_limit", "protocol": "tcp", "tcp_flags": " !ACK , syn", "source_port": "80-80",
                  "ttl": "64", "bps": "1000000", "expires_at": "2026-12-05T19:30:00+01:30"})
    assert rule.to_dict() == {
        "action": "rate_limit", "protocol": "tcp", "tcp_flags": "syn,!ack", "source_port": 80, "ttl": 64,
        "bps": 1000000, "burst_bytes": 12500, "per": "source", "per_prefix": 32, "per_prefix6": 64,
        "expires_at": LATER}
    assert rule.tcp_flags == (2, 16) and rule.expires_at == 1796493600


def test_rate_limit_defaults():
    rule = parse({"action": "rate_limit", "pps": 5, "bps": 80000, "per": "rule"})
    assert (rule.burst, rule.burst_bytes, rule.per, rule.per_prefix, rule.per_prefix6) == (1, 1514, "rule", None, None)
    assert parse({"action": "rate_limit", "pps": 10 ** 6}).burst == 10 ** 5


def test_packed_fields_follow_the_spec():
    rule = parse({"action": "rate_limit", "source": "198.18.0.0/16", "protocol": "tcp", "source_port": "1-2",
                  "tcp_flags": "syn,!ack", "length": "40-60", "ttl": "1-64", "pps": 3, "burst": 7, "bps": 12345,
                  "burst_bytes": 2000, "per_prefix": 24, "per_prefix6": 56, "expires_at": LATER})
    fields = _layout.RULE.unpack(_fw_model.pack_rule(rule))
    assert fields.action == _layout.RATE_LIMIT
    assert fields.more == _layout.MORE_SPORT | _layout.MORE_TCP_FLAGS | _layout.MORE_LENGTH | _layout.MORE_TTL | \
        _layout.MORE_EXPIRES
    assert (fields.sport_lo, fields.sport_hi, fields.length_lo, fields.length_hi, fields.ttl_lo, fields.ttl_hi,
            fields.tcp_set, fields.tcp_clear) == (1, 2, 40, 60, 1, 64, 2, 16)
    assert (fields.limit_per, fields.limit_prefix4, fields.limit_prefix6) == (_layout.PER_SOURCE, 24, 56)
    assert fields.expires == 1796493600 * 10 ** 9
    assert fields.packet_cost == round((10 ** 9 << 16) / 3) and fields.packet_burst == 7 * 10 ** 9 // 3
    assert fields.byte_cost == round((8 * 10 ** 9 << 16) / 12345) and fields.byte_burst == 2000 * 8 * 10 ** 9 // 12345
    icmp = _layout.RULE.unpack(_fw_model.pack_rule(parse({"action": "drop", "protocol": "icmp", "icmp_type": 0,
                                                          "icmp_code": 0})))
    assert icmp.more == _layout.MORE_ICMP_TYPE | _layout.MORE_ICMP_CODE and icmp.limit_per == _layout.PER_RULE


def test_a_plain_rule_packs_as_before():
    fields = _layout.RULE.unpack(_fw_model.pack_rule(parse({"action": "drop", "protocol": "udp", "port": 53})))
    assert fields.more == 0 and fields[_layout.RULE.Values._fields.index("sport_lo"):] == \
        _layout.RULE.unpack(_layout.EMPTY_RULE)[_layout.RULE.Values._fields.index("sport_lo"):]


def rate_round_trip(pps=None, bps=None, burst=None, burst_bytes=None):
    given = (("pps", pps), ("bps", bps), ("burst", burst), ("burst_bytes", burst_bytes))
    item = dict((key, value) for key, value in given if value is not None)
    rule = parse(dict(item, action="rate_limit", per="rule"))
    decoded = _fw_model.canonical_of_packed(_fw_model.pack_rule(rule))
    return dict((key, decoded.get(key)) for key in item), item


def test_every_packet_rate_decodes_back_though_large_rates_share_a_cost():
    generator = random.Random(19)
    rates = list(range(1, 3000)) + list(range(8100000, 8103000)) + list(range(10 ** 9 - 3000, 10 ** 9 + 1)) + \
        [generator.randint(1, 10 ** 7) for draw in range(5000)] + [generator.randint(1, 10 ** 9) for draw in range(3000)]
    shared = sum(1 for pps in rates if round((10 ** 9 << 16) / round((10 ** 9 << 16) / pps)) != pps)
    assert shared > 1000  # rounding the cost back would not give these rates
    for pps in rates:
        burst = generator.choice([1, max(1, pps // 10), generator.randint(1, pps * 3600)])
        decoded, given = rate_round_trip(pps=pps, burst=burst)
        assert decoded == given


def test_every_bit_rate_and_byte_burst_decodes_back():
    generator = random.Random(80)
    rates = list(range(8, 3000)) + list(range(23000000, 23003000)) + list(range(10 ** 12 - 3000, 10 ** 12 + 1)) + \
        [generator.randint(8, 10 ** 12) for draw in range(8000)]
    for bps in rates:
        burst_bytes = generator.choice([1514, max(1514, bps // 80), generator.randint(1514, max(1514, bps // 8 * 3600))])
        decoded, given = rate_round_trip(bps=bps, burst_bytes=burst_bytes)
        assert decoded == given


def test_the_fast_path_leaves_any_new_key_to_the_parser():
    plain = {"action": "drop", "source": "198.18.0.0/16", "protocol": "udp", "port": 53}
    values = tuple(plain.get(key) for key in _fw_model.RULE_KEYS)
    assert _fw_model.pack_canonical(values) == _fw_model.pack_rule(parse(plain))
    for key, value in (("source_port", 0), ("length", 0), ("ttl", 1), ("expires_at", LATER), ("expires_after", 60),
                       ("icmp_type", 0), ("pps", 1), ("per", "rule")):
        assert _fw_model.pack_canonical(tuple(dict(plain, **{key: value}).get(field)
                                              for field in _fw_model.RULE_KEYS)) is None, key
    assert _fw_model.pack_canonical(tuple(dict(plain, action="rate_limit").get(key)
                                          for key in _fw_model.RULE_KEYS)) is None


def test_a_rule_whose_expiry_is_not_resolved_cannot_be_packed():
    rule = parse({"action": "drop", "expires_after": 60})
    assert rule.to_dict() == {"action": "drop", "expires_after": 60}
    with pytest.raises(ValueError, match="expires_after 60 is not resolved"):
        _fw_model.pack_rule(rule)


def test_new_matches_are_part_of_a_nameless_rules_identity():
    syn = {"action": "drop", "protocol": "tcp", "tcp_flags": "syn"}
    assert _fw_model.rule_key(syn) != _fw_model.rule_key(dict(syn, tcp_flags="syn,!ack"))
    assert _fw_model.rule_key(dict(syn, expires_at=LATER)) == _fw_model.rule_key(syn)
    assert "tcp_flags syn" in _fw_model.describe_key(_fw_model.rule_key(syn))


@pytest.mark.parametrize("item,line", [
    (CANONICAL[4], "rate_limit tcp from any to any tcp_flags syn,!ack (500 pps per source /32, IPv6 /64)"),
    (CANONICAL[5], "rate_limit udp from 198.18.0.0/16 to any source_port 53 (9999991 pps burst 3 and 987654321987 bps "
                   "burst 123456789 bytes per source /24) expires 2026-12-05T18:00:00Z"),
    (CANONICAL[3], "drop icmpv6 from any to 2001:db8::/32 icmp_type 128 ttl 255 expires 2026-12-05T18:00:00Z"),
    (CANONICAL[2], "pass icmp from 198.18.0.0/15 to any icmp_type 3 code 4 ttl 0-1"),
    (dict(CANONICAL[7], name="one"), "rate_limit ip from any to 2001:db8::1/128 (1 pps per rule) "
                                     "expires 2554-07-21T23:34:33Z (one)"),
    ({"action": "drop", "expires_after": 60}, "drop ip from any to any expires after 60 s"),
])
def test_rule_lines_show_matches_limits_and_expiry(item, line):
    assert _fw_model.rule_line(item) == line
