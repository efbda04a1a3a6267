"""Rate limits in the program, packet by packet: a burst goes on to the rules after the limit and what exceeds it
is dropped and counted as the limit's hit; buckets per source, per prefix and per rule; refill; byte rates; the
facts that report them; the compiler's limits."""

import socket
import struct
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _facts, _fw_buckets, _fw_compile, _fw_kernel, _fw_slots, _libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import Index
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import (
    CLOCK_TICK_NS, HOST_HASH, LIMIT_KEY, LIMIT_SLOT, LIMIT_STATE, OWNER_IPV6, U32, U64, XDP_ACTIONS)
from tests.helpers import reference
from tests.helpers.reference import parse_rules

from .conftest import OBJECT, PROGRAM

PASS, DROP = XDP_ACTIONS["pass"], XDP_ACTIONS["drop"]
A, A_NEIGHBOUR, B, SERVER = "198.18.1.7", "198.18.1.8", "198.18.2.9", "198.19.0.1"
PORT = 9000
# within its limit a packet goes on to `pass udp`; with nothing after the limit matching, it would be dropped
LIMIT_THEN_PASS = [{"action": "pass", "protocol": "udp"}]


@pytest.fixture(scope="module")
def limiter():
    """A firewall of this module's own, so that its buckets and counters start empty."""
    with _libbpf.BpfObject(OBJECT) as bpf_object:
        bpf_object.load()
        yield bpf_object.program(PROGRAM).fd, reference.map_fds(bpf_object)


def apply(limiter, limit, default_action="drop"):
    """Applies [rate_limit udp port PORT with `limit`, pass udp], their counters and buckets fresh; returns the
    counter slots."""
    _fd, maps = limiter
    rules = parse_rules([dict({"action": "rate_limit", "protocol": "udp", "port": PORT}, **limit)] + LIMIT_THEN_PASS)
    compiled = reference.compile_rules(rules, default_action)
    _fw_slots.apply_ruleset(maps, compiled, fresh_counters=compiled.counters)
    return compiled.counters


def udp(source, size=0):
    ip = IPv6(src=source, dst="::ffff:" + SERVER) if ":" in source else IP(src=source, dst=SERVER)
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / UDP(sport=1234, dport=PORT)
                 / (b"x" * size))


def verdicts(limiter, sources):
    fd, _maps = limiter
    return [_libbpf.prog_test_run(fd, udp(source))[0] for source in sources]


def counts(limiter, counter):
    """(passed packets, limited packets) of a rate limit's counter slot."""
    _fd, maps = limiter
    passed = _fw_kernel.PerCpuRecords(maps["xf_passed"], counter + 1).summed(counter)[0]
    limited = _fw_kernel.PerCpuRecords(maps["xf_hits"], counter + 1).summed(counter)[0]
    return passed, limited


def test_a_burst_goes_on_to_the_next_rules_and_the_rest_is_dropped_as_the_limits_hit(limiter):
    counters = apply(limiter, {"pps": 1, "burst": 3})
    assert verdicts(limiter, [A] * 5) == [PASS] * 3 + [DROP] * 2
    assert counts(limiter, counters[0]) == (3, 2)
    assert counts(limiter, counters[1])[1] == 3  # the pass rule took what the limit let on


def test_each_source_has_its_own_bucket(limiter):
    apply(limiter, {"pps": 1, "burst": 2})
    assert verdicts(limiter, [A, A, A, B, B, B, A_NEIGHBOUR]) == [PASS, PASS, DROP, PASS, PASS, DROP, PASS]


def test_a_per_prefix_bucket_covers_its_prefix(limiter):
    apply(limiter, {"pps": 1, "burst": 2, "per_prefix": 24})
    assert verdicts(limiter, [A, A_NEIGHBOUR, A, B]) == [PASS, PASS, DROP, PASS]


def test_ipv6_sources_share_a_bucket_per_64_by_default(limiter):
    apply(limiter, {"pps": 1, "burst": 1})
    assert verdicts(limiter, ["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:2::1"]) == [PASS, DROP, PASS]


def test_a_per_rule_bucket_is_shared_by_every_source(limiter):
    counters = apply(limiter, {"pps": 1, "burst": 3, "per": "rule"})
    assert verdicts(limiter, [A, B, A_NEIGHBOUR, B]) == [PASS, PASS, PASS, DROP]
    _fd, maps = limiter
    assert _fw_buckets.tracked(maps)[counters[0]] == 1


def test_a_bucket_refills_at_the_rate(limiter):
    apply(limiter, {"pps": 20, "burst": 1})
    assert verdicts(limiter, [A, A]) == [PASS, DROP]
    time.sleep(0.3)  # 6 packets' worth, seen through a clock that moves by kernel ticks
    refilled = verdicts(limiter, [A] * 10).count(PASS)
    assert 1 <= refilled <= 2  # a burst of 1 holds one packet however long the wait


def test_a_byte_rate_counts_whole_frames(limiter):
    apply(limiter, {"bps": 8000, "burst_bytes": 1514})  # 1,000 bytes a second
    fd, _maps = limiter
    frame = udp(A, size=200)  # 242 bytes with Ethernet, IP and UDP headers
    assert [_libbpf.prog_test_run(fd, copy)[0] for copy in [frame] * 8] == [PASS] * 6 + [DROP] * 2


def test_facts_report_passed_limited_and_tracked_sources(limiter):
    counters = apply(limiter, {"pps": 1, "burst": 1})
    verdicts(limiter, [A, A, A, B])
    _fd, maps = limiter
    kernel = _fw_kernel.KernelRuleset(maps)
    (limit,) = _facts.rate_limits(kernel, Index({}, {}), maps, _facts.hit_records(kernel))
    assert (limit["position"], limit["passed"]["packets"], limit["limited"]["packets"], limit["sources"]) == \
        (1, 2, 2, 2)
    assert limit["rule"].startswith("rate_limit udp") and counts(limiter, counters[0]) == (2, 2)


def test_facts_give_the_seconds_a_rule_has_left(limiter):
    _fd, maps = limiter
    now = time.time()
    rules = parse_rules([{"action": "drop", "source": B, "expires_after": 600}])
    rules = [rule._replace(expires_at=int(now) + 600, expires_after=None) for rule in rules]
    _fw_slots.apply_ruleset(maps, reference.compile_rules(rules, "pass"))
    (rule,) = _facts.expiring_rules(_fw_kernel.KernelRuleset(maps), Index({}, {}), now=now)
    assert rule["position"] == 1 and 599 <= rule["seconds_left"] <= 600
    assert _facts.expiring_rules(_fw_kernel.KernelRuleset(maps), Index({}, {}), now=now + 700)[0]["seconds_left"] == 0


def test_more_rate_limits_on_one_packets_path_than_the_program_follows_are_refused():
    limit = {"action": "rate_limit", "pps": 100}
    rules = parse_rules([dict(limit, protocol="udp"), dict(limit, source="198.18.0.0/16"),
                         dict(limit, destination="198.19.0.0/16")])
    with pytest.raises(_fw_compile.CompileError, match=r"a udp packet could go through 3 rate limits \(1 without "
                                                       r"source or destination, 1 by its source, 1 by its "
                                                       r"destination\), more than the 2"):
        reference.compile_rules(rules, "pass")
    reference.compile_rules(rules[:2], "pass")


def test_rate_limits_for_other_protocols_do_not_add_up():
    limits = [{"action": "rate_limit", "pps": 100, "protocol": protocol} for protocol in ("udp", "tcp", "icmp")]
    reference.compile_rules(parse_rules(limits + [dict(limits[0], protocol="tcp", source="198.18.0.0/16")]), "pass")
    with pytest.raises(_fw_compile.CompileError, match="a tcp packet could go through 3 rate limits"):
        reference.compile_rules(parse_rules(limits + [dict(limits[0], protocol="tcp", source="198.18.0.0/16"),
                                                      {"action": "rate_limit", "pps": 100,
                                                       "source": "198.18.1.0/24"}]), "pass")


def test_more_general_rules_with_further_conditions_than_the_program_checks_are_refused():
    rules = parse_rules([{"action": "drop", "protocol": "udp", "ttl": ttl} for ttl in range(17)])
    with pytest.raises(_fw_compile.CompileError, match="17 rules without source or destination have conditions"):
        reference.compile_rules(rules, "pass")
    reference.compile_rules(rules[:16], "pass")


def slot_pair(counter, source):
    """The indexes of the two xf_limit_slots a source's bucket may take (bpf/xdp_firewall.h), for a bucket per
    IPv4 address or per IPv6 /64."""
    if ":" in source:
        low, high = struct.unpack("<II", socket.inet_pton(socket.AF_INET6, source)[:8])
        tag, word = (counter + 1) | OWNER_IPV6, low ^ high
    else:
        tag, word = counter + 1, int.from_bytes(socket.inet_aton(source), "little")
    pair = (((word ^ tag * HOST_HASH) % 2 ** 32) * HOST_HASH % 2 ** 32) >> 16 & ~1
    return pair, pair + 1


@pytest.mark.parametrize("source, other", [(A, B), ("2001:db8:0:1::1", "2001:db8:0:2::1")])
def test_a_source_whose_pair_of_slots_is_taken_keeps_its_bucket_in_the_lru_map(limiter, source, other):
    counters = apply(limiter, {"pps": 1, "burst": 2})
    _fd, maps = limiter
    strangers = LIMIT_SLOT.pack(0x7fffffff << 32, 0, bytes(LIMIT_STATE.size))  # owned by no counter in use
    pair = [U32.pack(index) for index in slot_pair(counters[0], source)]
    _libbpf.map_update_batch(maps["xf_limit_slots"], pair, [strangers] * 2)
    try:
        assert verdicts(limiter, [source] * 3 + [other] * 3) == [PASS, PASS, DROP, PASS, PASS, DROP]
        lru_counters = [LIMIT_KEY.unpack(key).counter for key in _libbpf.map_keys(maps["xf_limits"], LIMIT_KEY.size)]
        assert lru_counters.count(counters[0]) == 1 and _fw_buckets.tracked(maps)[counters[0]] == 2
    finally:
        _libbpf.map_update_batch(maps["xf_limit_slots"], pair, [_fw_buckets.FREE_SLOT] * 2)


def test_an_ipv6_prefix_longer_than_64_bits_keeps_its_buckets_in_the_lru_map(limiter):
    counters = apply(limiter, {"pps": 1, "burst": 1, "per_prefix6": 96})
    assert verdicts(limiter, ["2001:db8::1:0:1", "2001:db8::1:0:2", "2001:db8::2:0:1"]) == [PASS, DROP, PASS]
    _fd, maps = limiter
    lru_counters = [LIMIT_KEY.unpack(key).counter for key in _libbpf.map_keys(maps["xf_limits"], LIMIT_KEY.size)]
    assert lru_counters.count(counters[0]) == 2 == _fw_buckets.tracked(maps)[counters[0]]


def test_without_the_tick_written_a_rate_limit_lets_packets_through(limiter):
    apply(limiter, {"pps": 1, "burst": 1})
    _fd, maps = limiter
    tick = U32.pack(CLOCK_TICK_NS)
    written = _libbpf.map_lookup(maps["xf_clock"], tick, U64.size)
    _libbpf.map_update(maps["xf_clock"], tick, U64.pack(0))
    try:
        assert verdicts(limiter, [A] * 3) == [PASS] * 3
    finally:
        _libbpf.map_update(maps["xf_clock"], tick, written)
    assert verdicts(limiter, [A] * 2) == [PASS, DROP]


def test_the_facts_of_an_attached_program_count_the_buckets_of_both_maps(limiter):
    """As xdp_facts opens the maps: by the ids the program lists."""
    counters = apply(limiter, {"pps": 1, "burst": 1})
    verdicts(limiter, [A, A, B])
    _fd, maps = limiter
    described = {"maps": [{"name": name, "id": _libbpf.map_info(fd)["id"]} for name, fd in maps.items()]}
    with _facts.firewall_maps(described) as opened:
        kernel = _fw_kernel.KernelRuleset(opened)
        (limit,) = _facts.rate_limits(kernel, Index({}, {}), opened, _facts.hit_records(kernel))
    assert (limit["sources"], limit["limited"]["packets"]) == (2, 1) and counts(limiter, counters[0]) == (2, 1)
