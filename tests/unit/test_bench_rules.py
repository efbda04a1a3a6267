"""The benches' rule sets at 100,000 and 200,000 rules: as many distinct sources as rules, each a valid
prefix inside 198.18.0.0/15 or 2001:db8::/32 (rules are only data: no traffic is sent to them)."""

import functools
import ipaddress

import pytest

from bench import control_plane, facts, fleet_scale
from bench.addresses import host_prefixes
from tests.lab import Layout

RANGES = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")]
SIZES = [100000, 200000]


@functools.lru_cache(maxsize=None)
def network(prefix):
    """The network of a prefix in the rules' text form; raises ValueError for 198.19.390.140/32."""
    return ipaddress.ip_network(prefix)


@functools.lru_cache(maxsize=None)
def in_range(prefix):
    return any(network(prefix).version == allowed.version and network(prefix).subnet_of(allowed) for allowed in RANGES)


def sources(rules):
    return [rule["source"] for rule in rules]


def assert_distinct_and_in_range(prefixes, count):
    assert len(prefixes) == count
    assert len({network(prefix) for prefix in prefixes}) == count
    assert [prefix for prefix in prefixes if not in_range(prefix)][:5] == []


@pytest.mark.parametrize("count", SIZES)
def test_host_prefixes(count):
    assert_distinct_and_in_range(host_prefixes(count), count)


def test_host_prefixes_start_where_asked_and_leave_out_what_is_avoided():
    prefixes = host_prefixes(131072, "198.19.255.254", avoid="198.18.0.0/24")
    assert prefixes[:3] == ["198.19.255.254/32", "198.19.255.255/32", "198.18.1.0/32"]
    assert prefixes[-257:-255] == ["198.19.255.253/32", "2001:db8::1/128"]


@pytest.mark.parametrize("count", SIZES)
def test_fleet_scale_rule_set(count):
    assert_distinct_and_in_range(sources(fleet_scale.rule_set(count, 53, Layout("fs", 130))), count)


@pytest.mark.parametrize("count", SIZES)
@pytest.mark.parametrize("rule_set", [control_plane.prefix_rules, lambda count: control_plane.prefix_rules(count, 100),
                                      lambda count: control_plane.replaced_prefixes(count, 100),
                                      lambda count: control_plane.removed_and_added(count, 100)],
                         ids=["from empty", "1% change", "1% replaced", "1% removed + added"])
def test_control_plane_rule_sets(rule_set, count):
    assert_distinct_and_in_range(sources(rule_set(count)), count)


@pytest.mark.parametrize("count", SIZES)
def test_facts_rules_keep_off_the_lab_but_its_client(count):
    client = facts.LAYOUT.client_address
    rules = facts.rules(client, count)
    assert_distinct_and_in_range(sources(rules), count)
    lab_subnet = ipaddress.ip_network("%s/24" % client, strict=False)
    in_lab = [prefix for prefix in sources(rules)
              if network(prefix).version == 4 and network(prefix).subnet_of(lab_subnet)]
    assert in_lab == [client + "/32"]
