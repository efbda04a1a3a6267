"""Rule validation, compiler and reference classifier, without the kernel."""

import time

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _rules
from ansible_collections.xdpfleet.xdp.plugins.module_utils._rules import Packet, RuleError, parse_rules


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
    assert _rules.classify(rules, "pass", Packet.ip("198.18.1.5", "198.19.0.1", 6, 80)) == ("pass", 0, "rule")
    assert _rules.classify(rules, "pass", Packet.ip("198.18.2.5", "198.19.0.1", 6, 80)) == ("drop", 1, "rule")
    assert _rules.classify(rules, "pass", Packet.ip("198.19.2.5", "198.19.0.1", 6, 80)) == ("pass", None, "default")
    assert _rules.classify(rules, "drop", Packet.special("arp")).action == "pass"


def test_chain_over_capacity_names_the_prefix():
    config = [{"action": "drop", "source": "198.18.0.0/16", "port": port} for port in range(1, 18)]
    with pytest.raises(_rules.CompileError, match="198.18.0.0/16"):
        _rules.compile_rules(parse_rules(config), "pass")


def test_chain_is_cut_after_an_unconditional_rule():
    config = [{"action": "pass", "source": "198.18.0.0/16"}] + [
        {"action": "drop", "source": "198.18.0.0/16", "port": port} for port in range(1, 40)]
    compiled = _rules.compile_rules(parse_rules(config), "pass")
    (chain,) = compiled.prefixes["s4t"].values()
    assert _rules.CHAIN_FORMAT.unpack(chain)[:2] == (1, 0)


def test_counters_survive_a_reorder_and_new_rules_get_unused_slots():
    first, second = parse_rules([{"action": "drop", "port": 1}, {"action": "drop", "port": 2}])
    third = parse_rules([{"action": "drop", "port": 3}])[0]
    counters, fresh = _rules.assign_counters([second, third, first], [first, second], [0, 1])
    assert counters == [1, 2, 0] and fresh == [2]


def test_100k_prefixes_compile_fast():
    rules = [_rules.Rule("drop", _rules.ipaddress.IPv4Network((0xC6120000 + index, 32)), None, None, None)
             for index in range(100000)]
    started = time.monotonic()
    compiled = _rules.compile_rules(rules, "pass")
    assert time.monotonic() - started < 3
    assert len(compiled.prefixes["s4h"]) == 100000
