"""Rule validation, compiler and reference classifier, without the kernel."""

import ipaddress
import random
import time

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_compile, _fw_lockout, _fw_model, _layout
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import RuleError
from tests.helpers import reference
from tests.helpers.reference import Packet, parse_rules


@pytest.mark.parametrize("item,message", [
    ({"action": "drop", "port": 70000}, "config[0].port: 70000 is not a port (1-65535"),
    ({"action": "reject"}, "config[0].action: 'reject' is not an action"),
    ({"action": "drop", "source": "198.18.0.1/16"}, "has host bits set (did you mean 198.18.0.0/16?)"),
    ({"action": "drop", "protocol": "icmp", "port": 80}, "config[0].port: ports need protocol tcp or udp"),
    ({"action": "drop", "colour": 1}, "config[0].colour: unknown key"),
    ({"action": "drop", "source": "198.18.0.1", "destination": "::1"}, "different address families"),
])
def test_validation_names_the_field_and_the_fix(item, message):
    with pytest.raises(RuleError) as error:
        parse_rules([item])
    assert message in str(error.value)


def test_rules_round_trip_to_config_shape():
    config = [{"action": "drop", "source": "198.18.0.0/15", "protocol": "tcp", "port": "80-90"},
              {"action": "pass", "destination": "198.19.0.1/32", "protocol": 47}]
    assert [rule.to_dict() for rule in parse_rules(config)] == config


def test_first_match_wins():
    rules = parse_rules([{"action": "pass", "source": "198.18.1.0/24"}, {"action": "drop", "source": "198.18.0.0/16"}])
    assert reference.classify(rules, "pass", Packet.ip("198.18.1.5", "198.19.0.1", 6, 80)) == ("pass", 0, "rule")
    assert reference.classify(rules, "pass", Packet.ip("198.18.2.5", "198.19.0.1", 6, 80)) == ("drop", 1, "rule")
    assert reference.classify(rules, "pass", Packet.ip("198.19.2.5", "198.19.0.1", 6, 80)) == ("pass", None, "default")
    assert reference.classify(rules, "drop", Packet.special("arp")).action == "pass"


def test_chain_over_capacity_names_the_prefix():
    config = [{"action": "drop", "source": "198.18.0.0/16", "port": port} for port in range(1, 18)]
    with pytest.raises(_fw_compile.CompileError, match="198.18.0.0/16"):
        reference.compile_rules(parse_rules(config), "pass")


def test_chain_is_cut_after_an_unconditional_rule():
    config = [{"action": "pass", "source": "198.18.0.0/16"}] + [
        {"action": "drop", "source": "198.18.0.0/16", "port": port} for port in range(1, 40)]
    compiled = reference.compile_rules(parse_rules(config), "pass")
    (chain,) = compiled.prefixes["s4t"].values()
    assert _layout.CHAIN.format.unpack(chain)[:2] == (1, 0)


def test_a_port_entry_holds_its_protocols_rule_when_that_comes_first():
    """The program looks up one general entry per packet: a TCP or UDP port's when the packet has ports."""
    config = [{"action": "pass", "protocol": "tcp", "port": 22}, {"action": "drop", "protocol": "tcp"},
              {"action": "pass", "port": 80}, {"action": "drop", "protocol": "icmp"}]
    gen = reference.compile_rules(parse_rules(config), "pass").gen
    assert gen[_layout.GEN_TCP + 22] == 1 and gen[_layout.GEN_TCP + 80] == gen[_layout.GEN_TCP + 443] == 2
    assert gen[_layout.GEN_UDP + 80] == 3 and gen[_layout.GEN_UDP + 443] == 0
    assert gen[_layout.GEN_PROTO + 6] == 2 and gen[_layout.GEN_PROTO + 1] == 4 and gen[_layout.GEN_PROTO + 17] == 0


def test_counters_survive_a_reorder_and_new_rules_get_unused_slots():
    first, second = parse_rules([{"action": "drop", "port": 1}, {"action": "drop", "port": 2}])
    third = parse_rules([{"action": "drop", "port": 3}])[0]
    counters, fresh = _fw_compile.assign_counters([second, third, first], [first, second], [0, 1])
    assert counters == [1, 2, 0] and fresh == [2]


def test_100k_prefixes_compile_fast():
    rules = [_fw_model.Rule("drop", ipaddress.IPv4Network((0xC6120000 + index, 32)), None, None, None)
             for index in range(100000)]
    started = time.monotonic()
    compiled = reference.compile_rules(rules, "pass")
    assert time.monotonic() - started < 3
    assert len(compiled.prefixes["s4h"]) == 100000


CANONICAL = [
    {"action": "drop", "source": "198.18.0.0/15"},
    {"action": "pass", "source": "198.18.4.0/24", "destination": "198.19.0.1/32", "protocol": "tcp", "port": 22},
    {"action": "drop", "destination": "0.0.0.0/0", "protocol": "udp", "port": "53-60"},
    {"action": "drop", "protocol": 47},
    {"action": "pass", "protocol": "icmp"},
    {"action": "drop", "port": 80},
    {"action": "pass"},
]


@pytest.mark.parametrize("item", CANONICAL)
def test_canonical_values_pack_like_parsed_rules_and_decode_back(item):
    values = tuple(item.get(key) for key in _fw_model.RULE_KEYS)
    rule = _fw_model.parse_rule(item)
    assert _fw_model.pack_canonical(values) == _fw_model.pack_rule(rule)
    assert _fw_model.canonical_of_packed(_fw_model.pack_rule(rule)) == rule.to_dict() == item


@pytest.mark.parametrize("item", [
    {"action": "drop", "source": "198.18.0.01/32"}, {"action": "drop", "source": "198.18.0.1"},
    {"action": "drop", "source": "198.18.0.1/15"}, {"action": "drop", "source": "198.18.0.0/33"},
    {"action": "drop", "source": " 198.18.0.0/16"}, {"action": "drop", "source": "2001:db8::/32"},
    {"action": "drop", "protocol": "TCP"}, {"action": "drop", "protocol": 6}, {"action": "drop", "protocol": True},
    {"action": "drop", "port": "22-22"}, {"action": "drop", "port": True}, {"action": "drop", "port": "022"},
    {"action": "drop", "protocol": "icmp", "port": 80},
    {"action": "drop", "source": "198.18.0.0/16", "protocol": "icmpv6"},
    {"action": "reject"}, {"action": "drop", "port": 0},
])
def test_values_not_in_canonical_form_are_left_to_the_parser(item):
    assert _fw_model.pack_canonical(tuple(item.get(key) for key in _fw_model.RULE_KEYS)) is None


def test_ipv6_rules_decode_back():
    rule = _fw_model.parse_rule({"action": "drop", "source": "2001:db8::/32", "destination": "2001:db8:1::1/128"})
    assert _fw_model.canonical_of_packed(_fw_model.pack_rule(rule)) == rule.to_dict()


def test_first_match_on_packed_rules_agrees_with_the_classifier():
    generator = random.Random(5)
    networks = [None, "198.18.0.0/15", "198.18.1.0/24", "198.18.1.7/32", "0.0.0.0/0", "2001:db8::/32"]
    for attempt in range(300):
        items = [dict((key, value) for key, value in (
            ("action", generator.choice(["drop", "pass"])), ("source", generator.choice(networks)),
            ("protocol", generator.choice([None, "tcp", "udp"])), ("port", generator.choice([None, 22, "20-30"])))
            if value is not None) for item in range(4)]
        try:
            rules = parse_rules(items)
        except RuleError:
            continue
        family = generator.choice([4, 6])
        source = generator.choice(["198.18.1.7", "198.18.2.1", "198.20.0.1"] if family == 4 else ["2001:db8::5", "::1"])
        destination = "198.19.0.1" if family == 4 else "2001:db8::1"
        packet = Packet.ip(source, destination, generator.choice([6, 17, 1]), generator.choice([None, 22, 25, 80]))
        assert _fw_lockout.first_matching_rule([_fw_model.pack_rule(rule) for rule in rules], packet.src, packet.dst,
                                               packet.proto, packet.dport) == \
            reference.classify(rules, "pass", packet).position


def test_counters_keep_their_slots_when_a_rule_occurs_twice():
    first, second = parse_rules([{"action": "drop", "port": 1}, {"action": "drop", "port": 2}])
    counters, fresh = _fw_compile.assign_counters([first, second, first], [first, first, second], [4, 5, 6])
    assert counters == [4, 6, 5] and fresh == []


def test_placed_rules_keep_their_positions_and_new_ones_fill_the_holes():
    assert _fw_compile.place_rules([0, None, 2, 3, None]) == [0, 1, 2, 3, 4]
    assert _fw_compile.place_rules([0, 5, None, None, 9]) == [0, 5, 6, 7, 9]
    # no room between 0 and 1: the kept rule at 1 moves along, the one at 5 stays
    assert _fw_compile.place_rules([0, None, None, 1, 5]) == [0, 1, 2, 3, 5]
    assert _fw_compile.place_rules([None, None]) == [0, 1]


def test_placing_renumbers_when_the_positions_run_out():
    assert list(_fw_compile.place_rules([2, 3, None], limit=4)) == [0, 1, 2]
    assert _fw_compile.place_rules([1, 2, None], limit=4) == [1, 2, 3]
