"""Named cases: every verdict, counter and sampled event of the program against the reference."""

import ipaddress

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import (
    _fw_compile, _fw_hosts, _fw_kernel, _fw_model, _fw_slots, _layout, _libbpf)
from tests.helpers import reference
from tests.helpers.reference import Packet, parse_rules
from tests.helpers.slots import compiled_contents, slot_contents

from .frames import GRE, ICMP_, ICMPV6_, TCP_, UDP_, FrameSpec, arp_frame, build, frames_for, mapped, \
    other_ethertype_frame

A, B, C = "198.18.1.7", "198.18.2.9", "198.19.0.1"
A6, B6, C6 = mapped(A), mapped(B), mapped(C)


def assert_agrees(firewall, config, default_action, frames):
    firewall.apply(parse_rules(config), default_action)
    assert firewall.check(frames) == []


def test_ipv4_options_every_length(firewall):
    config = [{"action": "drop", "source": "198.18.1.0/24", "protocol": "tcp", "port": 80}]
    specs = [FrameSpec(A, C, TCP_, port, ip_options=options) for options in range(0, 41, 3) for port in (79, 80)]
    assert_agrees(firewall, config, "pass", frames_for(specs))


@pytest.mark.parametrize("ext", [(), ("hbh",), ("rt",), ("dst",), ("hbh", "rt", "dst"), ("hbh", "dst", "rt", "dst")])
@pytest.mark.parametrize("fragment", [None, "first", "later"])
def test_ipv6_extension_headers_and_fragments(firewall, ext, fragment):
    config = [{"action": "drop", "source": A6 + "/128", "protocol": "tcp", "port": 22},
              {"action": "pass", "destination": mapped("198.19.0.0") + "/120", "protocol": "udp"},
              {"action": "drop", "protocol": "udp"}]
    specs = [FrameSpec(source, C6, proto, port, ext=ext, fragment=fragment)
             for source in (A6, B6) for proto in (TCP_, UDP_) for port in (22, 23)]
    assert_agrees(firewall, config, "pass", frames_for(specs))


def test_too_many_ipv6_extension_headers_is_malformed(firewall):
    frame = build(FrameSpec(A6, C6, TCP_, 80, ext=("dst",) * 9))[0]
    assert_agrees(firewall, [], "pass", [(frame, Packet.special("malformed"))])


@pytest.mark.parametrize("vlans,qinq", [(0, False), (1, False), (2, False), (2, True), (3, False), (3, True)])
def test_vlan_tags(firewall, vlans, qinq):
    config = [{"action": "drop", "source": A}]
    specs = [FrameSpec(source, C, UDP_, 53, vlans=vlans, qinq=qinq) for source in (A, B)]
    assert_agrees(firewall, config, "pass", frames_for(specs))


def test_non_first_fragments_match_only_addresses_and_protocol(firewall):
    config = [{"action": "pass", "protocol": "tcp", "port": 443},
              {"action": "drop", "source": "198.18.0.0/16", "protocol": "tcp"},
              {"action": "pass", "source": "198.18.0.0/16", "port": "1-65535"}]
    specs = [FrameSpec(source, C, TCP_, 443, fragment=fragment)
             for source in (A, A6) for fragment in (None, "first", "later")]
    specs = [spec._replace(dst=C6) if spec.family == 6 else spec for spec in specs]
    assert_agrees(firewall, config, "drop", frames_for(specs))


TRUNCATION_SPECS = [
    FrameSpec(A, C, TCP_, 80, vlans=2, qinq=True, ip_options=6),
    FrameSpec(A, C, UDP_, 53, vlans=1),
    FrameSpec(A, C, ICMP_),
    FrameSpec(A, C, GRE),
    FrameSpec(A, C, TCP_, 80, fragment="later"),
    FrameSpec(A6, C6, TCP_, 80, ext=("hbh", "rt", "dst"), fragment="first"),
    FrameSpec(A6, C6, UDP_, 53, ext=("hbh",), fragment="later"),
    FrameSpec(A6, C6, ICMPV6_, nd=True),
    FrameSpec(A6, C6, ICMPV6_, vlans=1),
]


@pytest.mark.parametrize("spec", TRUNCATION_SPECS, ids=lambda spec: "%s-%s" % (spec.proto, spec.fragment))
def test_truncated_headers_at_every_length(firewall, spec):
    """Every cut before the end of the headers the program needs is malformed; the full headers are not.
    (BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, so cuts start at 14.)"""
    frame, required = build(spec)
    frames = [(frame[:length], Packet.special("malformed")) for length in range(14, required)]
    frames += frames_for([spec])
    assert_agrees(firewall, [{"action": "pass", "source": A}], "drop", frames)


def test_arp_and_neighbour_discovery_always_pass(firewall):
    config = [{"action": "drop"}, {"action": "drop", "protocol": "icmpv6"}]
    frames = [(arp_frame(), Packet.special("arp"))] + frames_for(
        [FrameSpec(A6, C6, ICMPV6_, nd=True), FrameSpec(A6, C6, ICMPV6_, nd=True, vlans=2),
         FrameSpec(A6, C6, ICMPV6_), FrameSpec(A, C, ICMP_)])
    assert_agrees(firewall, config, "drop", frames)


@pytest.mark.parametrize("default_action", ["pass", "drop"])
def test_other_ethertypes_get_the_default(firewall, default_action):
    assert_agrees(firewall, [{"action": "pass"}], default_action, [(other_ethertype_frame(), Packet.special("not_ip"))])


def test_port_ranges_at_their_edges(firewall):
    config = [{"action": "drop", "protocol": "tcp", "port": "1000-2000"},
              {"action": "pass", "port": "1500-1600"},
              {"action": "drop", "port": 65535},
              {"action": "drop", "protocol": "udp", "port": "1-1"},
              {"action": "drop", "source": A, "port": "3000-3001"}]
    ports = (1, 2, 999, 1000, 1001, 1499, 1500, 1600, 1601, 1999, 2000, 2001, 2999, 3000, 3001, 3002, 65534, 65535)
    specs = [FrameSpec(source, C, proto, port) for source in (A, B) for proto in (TCP_, UDP_) for port in ports]
    assert_agrees(firewall, config, "pass", frames_for(specs))


OVERLAPPING = [{"action": "drop", "source": "198.18.0.0/15"},
               {"action": "pass", "source": "198.18.1.0/24"},
               {"action": "drop", "source": "198.18.1.7/32", "protocol": "tcp"},
               {"action": "pass", "source": "198.18.1.0/25", "destination": "198.19.0.0/24"},
               {"action": "drop", "destination": "198.19.0.1"},
               {"action": "pass", "destination": "198.19.0.0/16", "port": 80}]


@pytest.mark.parametrize("order", [(0, 1, 2, 3, 4, 5), (5, 4, 3, 2, 1, 0), (2, 3, 1, 0, 4, 5), (4, 2, 5, 1, 3, 0)])
def test_overlapping_prefixes_in_different_orders(firewall, order):
    config = [OVERLAPPING[index] for index in order]
    specs = [FrameSpec(source, dst, proto, 80) for source in (A, "198.18.1.200", B, "198.19.5.5")
             for dst in (C, "198.19.0.77", "198.19.9.9") for proto in (TCP_, UDP_)]
    assert_agrees(firewall, config, "pass", frames_for(specs))


def test_sampling_off_sends_no_event(firewall):
    firewall.apply(parse_rules([{"action": "drop"}]), "drop", sample_rate=0)
    firewall.events.consume()
    assert firewall.run(build(FrameSpec(A, C, UDP_, 53))[0]) == _layout.XDP_ACTIONS["drop"]
    assert firewall.events.consume() == []


def test_both_slots_end_with_the_new_set_even_after_an_interrupted_run(firewall):
    first = parse_rules([{"action": "drop", "source": A}, {"action": "drop", "source": "198.18.4.0/24"},
                         {"action": "pass", "protocol": "tcp", "port": 22}])
    second = parse_rules([{"action": "drop", "source": B}, {"action": "drop", "destination": "198.19.0.0/16"}])
    third = parse_rules([{"action": "drop", "source": A}, {"action": "pass", "protocol": "udp", "port": 53}])
    firewall.apply(first, "pass")
    # a run that switched to `second` and stopped before writing the slot it left: the slots differ
    active, rate, metas = _fw_kernel.read_config(firewall.maps)
    compiled = reference.compile_rules(second, "drop")
    _fw_slots._write_slot(firewall.maps, 1 - active, compiled,
                          _fw_slots._slot_edits(firewall.maps, 1 - active, compiled, None), (active, rate, metas))
    _fw_slots.write_config(firewall.maps, 1 - active, rate, metas)
    assert slot_contents(firewall.maps, 0) != slot_contents(firewall.maps, 1)

    for rules in (third, first):
        compiled = reference.compile_rules(rules, "pass")
        firewall.apply(rules, "pass")
        assert slot_contents(firewall.maps, 0) == slot_contents(firewall.maps, 1) == compiled_contents(compiled)


def test_switch_writes_only_the_inactive_slot_and_removes_stale_entries(firewall):
    first = parse_rules([{"action": "drop", "source": A}, {"action": "drop", "source": "198.18.4.0/24"}])
    second = parse_rules([{"action": "drop", "source": B}])
    active_before = _fw_kernel.read_config(firewall.maps)[0]
    firewall.apply(first, "pass")
    firewall.apply(second, "pass")
    active, sample_rate, metas = _fw_kernel.read_config(firewall.maps)
    assert active == active_before
    assert metas[active] == reference.compile_rules(second, "pass").meta
    assert firewall.check(frames_for([FrameSpec(A, C, UDP_, 53), FrameSpec(B, C, UDP_, 53)])) == []
    keys = _libbpf.map_keys(firewall.maps["xf_s4h_%d" % active], 4)
    assert keys == [bytes(map(int, B.split(".")))]


def _host_rules(count):
    return [{"action": "drop", "source": "198.18.%d.%d/32" % (9 + number // 250, 1 + number % 250)}
            for number in range(count)] + [
        {"action": "pass", "destination": "198.18.8.%d" % number, "protocol": "tcp"} for number in (1, 2)] + [
        {"action": "drop", "source": mapped(B) + "/128"}]


def _apply_at(firewall, items, positions):
    compiled = _fw_compile.compile_packed([_fw_model.pack_rule(rule) for rule in parse_rules(items)], "pass",
                                          counters=positions, positions=positions)  # a kept rule keeps its counter
    _fw_slots.apply_ruleset(firewall.maps, compiled)
    return compiled


@pytest.mark.parametrize("new_rule", [
    {"action": "drop", "source": "198.18.20.1/32"},  # host prefixes only: edits from the changed rules
    {"action": "drop", "source": "198.18.9.0/24"},  # a shorter prefix in the new set: maps read back
])
def test_a_change_of_some_rules_leaves_both_slots_as_compiled(firewall, monkeypatch, new_rule):
    before = _host_rules(200)
    old_positions = list(range(0, 3 * len(before), 3))
    _apply_at(firewall, before, old_positions)
    _apply_at(firewall, before, old_positions)  # both slots hold `before`
    # as place_rules leaves them: the 2nd and 5th rules removed, the 6th flipped where it is, one added
    kept = [0, 2, 3] + list(range(5, len(before)))
    after = [before[index] for index in kept] + [new_rule]
    after[3] = dict(after[3], action="pass")
    read_back = []
    real_prefix_edits = _fw_slots._prefix_edits
    monkeypatch.setattr(_fw_slots, "_prefix_edits", lambda *args: read_back.append(args) or real_prefix_edits(*args))
    compiled = _apply_at(firewall, after, [old_positions[index] for index in kept] + [3 * len(before)])
    assert slot_contents(firewall.maps, 0) == slot_contents(firewall.maps, 1) == compiled_contents(compiled)
    assert bool(read_back) == new_rule["source"].endswith("/24")


def networks_of(*texts):
    return [ipaddress.ip_network(text) for text in texts]


def test_a_set_is_matched_in_rule_order_with_overlaps_inside_it_and_across_rules(firewall):
    sets = {"blocklist": networks_of("198.18.0.0/16", "198.18.1.0/24", A6 + "/128", "198.19.0.1"),
            "servers": networks_of(C, C6 + "/128")}
    config = [{"action": "pass", "source": A, "protocol": "tcp", "port": 22},
              {"action": "drop", "source_set": "blocklist"},
              {"action": "pass", "source": "198.18.0.0/15"},
              {"action": "drop", "destination_set": "servers", "protocol": "udp"}]
    specs = [FrameSpec(source, destination, proto, port)
             for source, destination in ((A, C), (B, C), (C, A), (A6, C6), (B6, C6), ("198.19.0.2", C))
             for proto in (TCP_, UDP_) for port in (22, 53)]
    firewall.apply(parse_rules(config), "pass", sets=sets)
    assert firewall.check(frames_for(specs)) == []


def test_a_set_rule_with_a_destination_finds_only_the_set_entries_of_its_family(firewall):
    """A set of both families under an IPv4 destination: an IPv6 packet from the set must not match (the
    program compares only the destination's first word, which an IPv4-mapped address has as 0)."""
    sets = {"mixed": networks_of(A, A6 + "/128")}
    config = [{"action": "drop", "source_set": "mixed", "destination": "0.0.0.0/8"}]
    specs = [FrameSpec(A, "0.0.0.1", UDP_, 53), FrameSpec(A6, C6, UDP_, 53)]
    firewall.apply(parse_rules(config), "pass", sets=sets)
    assert firewall.check(frames_for(specs)) == []


def same_bucket_addresses(count, network="198.18.0.0/15"):
    """count addresses of network that share one IPv4 host-table bucket (198.18.0.0/15 spreads evenly: four
    addresses per bucket)."""
    by_bucket = {}
    for address in ipaddress.ip_network(network).hosts():
        bucket = _fw_hosts.bucket_of(int.from_bytes(address.packed, "little"))
        by_bucket.setdefault(bucket, []).append(str(address))
        if len(by_bucket[bucket]) == count:
            return by_bucket[bucket]
    raise AssertionError("no bucket of %s holds %d addresses" % (network, count))


def crowd_case(side):
    """(rules, frames) of four addresses in one bucket: the first with two rules (so the table sends it on to
    the hash map), two more with one, the last with none but a /24 that covers it."""
    chained, single, other_single, outsider = same_bucket_addresses(4)
    config = [{"action": "pass", side: chained, "protocol": "tcp", "port": 22}] + [
        {"action": "drop", side: address} for address in (chained, single, other_single)] + [
        {"action": "drop", side: str(ipaddress.ip_network(outsider + "/24", strict=False))}]
    peer = "198.19.255.254"
    specs = [FrameSpec(address, peer, proto, port) if side == "source" else FrameSpec(peer, address, proto, port)
             for address in (chained, single, other_single, outsider, peer) for proto, port in ((TCP_, 22), (UDP_, 53))]
    return config, frames_for(specs), (chained, single, other_single)


def host_table_fd(firewall, side):
    table = _layout.HOST_TABLES[side[0] + "4h"]
    return firewall.maps["xf_%s_%d" % (table, _fw_kernel.read_config(firewall.maps)[0])]


@pytest.mark.parametrize("side", ["source", "destination"])
def test_host_table_finds_single_and_chained_addresses_and_misses_meet_shorter_prefixes(firewall, side):
    config, frames, crowd = crowd_case(side)
    assert_agrees(firewall, config, "pass", frames)
    size = _layout.HOSTS4.size
    raw = _libbpf.array_values(host_table_fd(firewall, side), size, _layout.HOST_BUCKETS)
    (bucket,) = [_layout.HOSTS4.unpack(raw[start:start + size]) for start in range(0, len(raw), size)
                 if raw[start:start + size] != _fw_hosts.EMPTY_BUCKET]
    assert (bucket.count, bucket.overflow, bucket.pos0) == (3, 0, _layout.CHAINED)


@pytest.mark.parametrize("side", ["source", "destination"])
def test_an_overflowing_bucket_sends_the_addresses_it_lacks_to_the_hash_map(firewall, side):
    """The bucket the compiler writes when more addresses hash to it than it holds (198.18.0.0/15 never
    does that, so the test writes it): two of the three addresses are left to the hash map."""
    config, frames, crowd = crowd_case(side)
    firewall.apply(parse_rules(config), "pass")
    address = int.from_bytes(ipaddress.ip_address(crowd[0]).packed, "little")
    values = [1, 1, address] + [0] * (_layout.BUCKET_HOSTS - 1) + [_layout.CHAINED] + [0] * (_layout.BUCKET_HOSTS - 1)
    _libbpf.map_update(host_table_fd(firewall, side), _layout.U32.pack(_fw_hosts.bucket_of(address)),
                       _layout.HOSTS4.format.pack(*values))
    assert firewall.check(frames) == []
