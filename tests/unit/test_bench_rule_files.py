"""bench/rule_files.py's sets, without a lab: the set file holds as many valid distinct entries as asked for,
none in the lab's subnet, in a text the firewall's own parser takes; the 1% change replaces exactly 1% of them
with addresses the set did not hold; the inline group_vars hold the same entries as rules."""

import ipaddress

import pytest
import yaml

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_sets
from bench import rule_files

SIZES = [100, 1000, 100000]
LAB_SUBNET = ipaddress.ip_network(rule_files.LAB_SUBNET)


def file_entries(text):
    """The entries of a set file as the text format defines them: '#' and ';' start comments, blank lines
    are ignored."""
    entries = (line.split("#", 1)[0].split(";", 1)[0].strip() for line in text.splitlines())
    return [entry for entry in entries if entry]


def assert_valid_distinct_outside_the_lab(entries, count):
    addresses = [ipaddress.ip_address(entry) for entry in entries]
    assert len(addresses) == count
    assert len(set(addresses)) == count
    assert [address for address in addresses if address in LAB_SUBNET] == []


@pytest.mark.parametrize("count", SIZES)
def test_set_file_has_the_requested_number_of_valid_distinct_entries(count):
    text = rule_files.set_file_text(rule_files.set_entries(count))
    assert_valid_distinct_outside_the_lab(file_entries(text), count)
    assert len(_fw_sets.parse_text(text, "drop.txt").lines) == count


@pytest.mark.parametrize("count", SIZES)
def test_one_percent_of_the_entries_is_replaced_by_new_ones(count):
    before = rule_files.set_entries(count)
    after = file_entries(rule_files.set_file_text(rule_files.replaced_entries(count)))
    assert_valid_distinct_outside_the_lab(after, count)
    changed_lines = [index for index, (old, new) in enumerate(zip(before, after)) if old != new]
    assert len(changed_lines) == count // 100
    assert len(set(after) - set(before)) == count // 100


def test_inline_rules_are_the_set_as_host_prefixes():
    entries = rule_files.set_entries(1000) + ["2001:db8::1"]
    rules = yaml.safe_load(rule_files.inline_rules_text(entries))["xdp_rules"]
    assert rules[0] == {"action": "drop", "source": entries[0] + "/32"}
    assert rules[-1] == {"action": "drop", "source": "2001:db8::1/128"}
    assert [rule["source"].split("/")[0] for rule in rules] == entries
