"""Address sets: files in each format, bad lines, the controller's cache, and whole xdp_rules runs with sets
against the real firewall maps (loaded here, pinned in a private bpffs mount)."""

import json

import pytest

from ansible_collections.xdpfleet.xdp.plugins.action.xdp_rules import (
    module_args, module_args_with_content, probe_first, with_content)
from ansible_collections.xdpfleet.xdp.plugins.module_utils import (
    _facts, _fw_compile, _fw_kernel, _fw_lockout, _fw_model, _fw_sets, _fw_sources, _fw_store, _layout, _restore)
from tests.helpers.slots import slot_contents
from tests.unit import test_ruleset as ruleset_suite

BLOCKLIST_TEXT = """\
# FireHOL-style header
; Spamhaus-style comment
198.18.0.0/16        # a network
198.18.7.0/24 ; covered by the line above: dropped
198.19.0.1

2001:db8::/32
2001:db8:1::5
"""
CANONICAL = ["198.18.0.0/16", "198.19.0.1/32", "2001:db8::/32"]
SSH = {"name": "ssh", "action": "pass", "protocol": "tcp", "port": 22}
BLOCK = {"name": "blocklist", "action": "drop", "source_set": "blocklist"}


# pytest finds fixtures by module attribute: the ruleset suite's firewall, loaded here as well.
firewall_object = ruleset_suite.firewall_object
host = ruleset_suite.host


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("name,content", [
    ("drop.txt", BLOCKLIST_TEXT),
    ("drop.json", json.dumps(["198.18.0.0/16", "198.18.7.0/24", "198.19.0.1", "2001:db8::/32", "2001:db8:1::5"])),
    ("drop.yml", "- 198.18.0.0/16\n- 198.18.7.0/24\n- 198.19.0.1\n- 2001:db8::/32\n- 2001:db8:1::5\n"),
])
def test_each_file_format_gives_the_same_canonical_set(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    source = _fw_sources.parse_set_file(str(path))
    address_set = _fw_sets.sets_of_option({"blocklist": source.payload})["blocklist"]
    assert address_set.lines == CANONICAL and source.digest == address_set.digest


def test_an_explicit_format_wins_over_the_extension(tmp_path):
    path = tmp_path / "drop.list"
    path.write_text('["198.18.0.1"]')
    with pytest.raises(_fw_sets.SetError):
        _fw_sources.parse_set_file(str(path))  # text by its extension
    assert _fw_sources.parse_set_file(str(path), "json").payload["digest"] == _fw_sets.lines_digest(["198.18.0.1/32"])


def test_bad_lines_are_reported_with_file_line_and_fix_and_the_first_few_only(tmp_path):
    path = tmp_path / "drop.txt"
    path.write_text("198.18.0.0/24\n" * 1203 + "198.18.0.5/24\nnot-an-address\n" + "198.19.0.0/33\n" * 40)
    with pytest.raises(_fw_sets.SetError) as error:
        _fw_sources.parse_set_file(str(path))
    message = str(error.value)
    assert message.startswith("%s line 1204: 198.18.0.5/24 has host bits set (did you mean 198.18.0.0/24?); "
                              "%s line 1205: 'not-an-address' is not an IPv4/IPv6 address or CIDR" % (path, path))
    assert "line 1206: 198.19.0.0/33 has no valid prefix length (0-32)" in message
    assert message.endswith("and 12 more")


def test_a_file_is_parsed_once_per_path_size_and_modification_time(tmp_path, monkeypatch):
    path = tmp_path / "drop.txt"
    path.write_text(BLOCKLIST_TEXT)
    first = _fw_sources.parse_set_file(str(path)).digest
    monkeypatch.setattr(_fw_sets, "parse_text", lambda *args: pytest.fail("parsed again"))
    assert _fw_sources.parse_set_file(str(path)).digest == first
    monkeypatch.undo()
    path.write_text(BLOCKLIST_TEXT + "198.19.0.2\n")
    assert _fw_sources.parse_set_file(str(path)).digest != first


def test_rules_file_is_validated_on_the_controller_naming_the_file(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text("- {action: drop, source_set: blocklist}\n- {action: drop, port: 70000}\n")
    with pytest.raises(_fw_sources.SourceError, match=r"rules_file .*rules.yml: config\[1\].port: 70000 is not a port"):
        _fw_sources.parse_rules_file(str(path))
    with pytest.raises(_fw_sources.SourceError, match="config and rules_file are mutually exclusive"):
        module_args({"rules_file": str(path), "config": []})


def test_a_set_rule_names_one_set_per_side_and_destination_sets_only_without_a_source():
    with pytest.raises(_fw_model.RuleError, match="source and source_set both given"):
        _fw_model.parse_rule({"action": "drop", "source": "198.18.0.0/16", "source_set": "a"})
    with pytest.raises(_fw_model.RuleError, match="cannot match a destination set too"):
        _fw_model.parse_rule({"action": "drop", "source_set": "a", "destination_set": "b"})
    with pytest.raises(_fw_model.RuleError, match="is not a set name"):
        _fw_model.parse_rule({"action": "drop", "source_set": "bad name"})


def blocklist_args(path, **more):
    return dict({"interface": "eth0", "state": "overridden", "config": [SSH, BLOCK],
                 "sets": {"blocklist": {"file": str(path)}}}, **more)


def test_a_set_from_a_file_is_applied_then_found_unchanged_without_its_content_being_sent(host, tmp_path):
    path = tmp_path / "drop.txt"
    path.write_text(BLOCKLIST_TEXT)
    args, content = module_args(blocklist_args(path))
    probe = host(**args)
    assert probe == {"changed": False, "interface": "eth0", "content_needed": True}
    first = host(**with_content(args, content))
    assert first["changed"] and first["sets"] == {"blocklist": {"entries": 3, "added": 3, "removed": 0}}
    second = host(**args)  # the digest alone
    assert not second["changed"] and "content_needed" not in second
    assert second["sets"] == {"blocklist": {"entries": 3, "added": 0, "removed": 0}}
    assert second["before"] == [SSH, BLOCK]


def test_a_changed_set_file_is_sent_and_only_the_set_entries_change(host, tmp_path):
    path = tmp_path / "drop.txt"
    path.write_text(BLOCKLIST_TEXT)
    host(**module_args_with_content(blocklist_args(path)))
    counters = _fw_kernel.KernelRuleset(host.maps).counters()
    path.write_text(BLOCKLIST_TEXT.replace("198.19.0.1", "198.19.0.9"))
    args, content = module_args(blocklist_args(path))
    assert host(**args)["content_needed"]
    changed = host(diff=True, **with_content(args, content))
    assert changed["changed"] and changed["summary"] == {"added": 0, "removed": 0, "changed": 0}
    assert changed["sets"]["blocklist"] == {"entries": 3, "added": 1, "removed": 1}
    assert changed["diff"]["prepared"].splitlines() == [
        "~ set blocklist: 3 entries, 1 added, 1 removed", "+   198.19.0.9/32", "-   198.19.0.1/32"]
    assert _fw_kernel.KernelRuleset(host.maps).counters() == counters  # the rule keeps its hit counter
    assert set_prefixes(host) == {"198.18.0.0/16", "198.19.0.9/32", "2001:db8::/32"}


def set_prefixes(host, position=1):
    """The prefixes through which the rule at this position is found, the same in both slots."""
    found = []
    for slot in (0, 1):
        found.append(set(prefix_of_key(name, key)
                         for name, entries in slot_contents(host.maps, slot)[3].items()
                         for key, chain in entries.items() if position in chain_positions(chain)))
    assert found[0] == found[1]
    return found[0]


def chain_positions(chain):
    values = _layout.CHAIN.format.unpack(chain)
    return values[1:1 + values[0]]


def prefix_of_key(name, key):
    family, width = (4, 32) if name[1] == "4" else (6, 128)
    length, address = (width, key) if name.endswith("h") else (int.from_bytes(key[:4], "little"), key[4:])
    return _fw_sets.prefix_text(_fw_sets.Prefix(family, int.from_bytes(address, "big"), length))


def test_a_rule_naming_an_undefined_set_changes_nothing(host):
    with pytest.raises(_fw_model.RuleError, match=r"rule 2.source_set: set blocklist is not defined"):
        host(state="overridden", config=[SSH, BLOCK])
    assert not host.state_file.exists()


def test_merged_keeps_the_stored_sets_and_overridden_only_the_given(host):
    host(state="overridden", config=[BLOCK], sets={"blocklist": ["198.18.0.0/16"]})
    merged = host(state="merged", config=[SSH])
    assert merged["changed"] and merged["sets"] == {"blocklist": {"entries": 1, "added": 0, "removed": 0}}
    with pytest.raises(_fw_model.RuleError, match="set blocklist is not defined"):
        host(state="overridden", config=[SSH, BLOCK], sets={"other": ["198.19.0.0/16"]})


def test_the_lockout_guard_knows_set_members():
    packed = [_fw_model.pack_rule(_fw_model.parse_rule({"action": "drop", "source_set": "blocklist"}))]
    sets = {_fw_sets.set_tag("blocklist"): _fw_sets.parse_entries(["198.18.0.0/16"], "blocklist")}
    assert _fw_lockout.first_matching_rule(packed, "198.18.5.5", "198.19.0.1", 6, 22, sets) == 0
    assert _fw_lockout.first_matching_rule(packed, "198.19.5.5", "198.19.0.1", 6, 22, sets) is None


def test_the_boot_time_restore_brings_back_a_100000_entry_set(host, tmp_path):
    path = tmp_path / "drop.txt"
    path.write_text("".join("198.%d.%d.%d\n" % (18 + n // 65536, n // 256 % 256, n % 256) for n in range(100000)))
    host(**module_args_with_content(blocklist_args(path)))
    stored = host.state_file.read_text()
    assert len(json.loads(stored)["sets"]["blocklist"]["lines"]) == 100000
    host(state="overridden", config=[])  # the kernel loses the rules, as at a reboot
    host.state_file.write_text(stored)
    restored = _restore.restore_rules("eth0", host.pin_dir, str(host.state_file.parent),
                                      str(host.state_file.parent.parent / "run"))
    assert restored["sets"] == {"blocklist": {"entries": 100000, "added": 100000, "removed": 0}}
    assert len(set_prefixes(host, 1)) == 100000
    # the restored state keeps the digest of the request, so a rollout can still revert to it
    digest = json.loads(stored)["request_digest"]
    assert digest and host(state="gathered")["request_digest"] == digest


def test_a_snapshot_is_reverted_to_by_digest_from_the_hosts_previous_state(host, tmp_path):
    path = tmp_path / "drop.txt"
    path.write_text(BLOCKLIST_TEXT)
    host(**module_args_with_content(blocklist_args(path)))
    snapshot = host(state="gathered")
    assert snapshot["request_digest"]
    path.write_text("198.19.0.0/16\n")
    host(**module_args_with_content(blocklist_args(path, default_action="drop")))
    reverted = host(state="overridden", revert_to=snapshot["request_digest"])
    assert reverted["changed"] and reverted["default_action"] == "pass"
    assert set_prefixes(host) == set(CANONICAL)
    assert not host(state="overridden", revert_to=snapshot["request_digest"])["changed"]
    with pytest.raises(_fw_store.StoreError, match="neither the current nor the previous request"):
        host(state="overridden", revert_to="0" * 64)


def test_facts_show_each_set_with_its_entries_and_the_rule_that_names_it(host, tmp_path):
    path = tmp_path / "drop.txt"
    path.write_text(BLOCKLIST_TEXT)
    host(**module_args_with_content(blocklist_args(path)))
    facts = _facts.firewall_facts(host.maps, "eth0", False, 10, str(host.state_file.parent))
    assert facts["sets"] == {"blocklist": 3}
    assert "drop ip from set blocklist to any" in [rule["rule"] for rule in facts["top_rules"]]


def test_rules_from_a_yaml_file_are_applied_then_found_unchanged_by_their_digest(host, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text("- {name: ssh, action: pass, protocol: tcp, port: 22}\n"
                     "- {name: blocklist, action: drop, source_set: blocklist}\n")
    task = {"interface": "eth0", "state": "overridden", "rules_file": str(rules),
            "sets": {"blocklist": ["198.19.0.0/16"]}}
    args, content = module_args(task)
    assert "config" not in args and host(**args)["content_needed"]
    assert host(**with_content(args, content))["rule_count"] == {"before": 0, "after": 2}
    again = host(**module_args(task)[0])
    assert not again["changed"] and again["before"] == [SSH, BLOCK]


def test_a_set_larger_than_a_prefix_map_is_refused_before_anything_changes(host):
    host(state="overridden", config=[SSH])
    state_before = host.state_file.read_text()
    entries = ["198.%d.%d.%d" % (18 + n // 65536, n // 256 % 256, n % 256) for n in range(_layout.MAX_PREFIXES + 1)]
    with pytest.raises(_fw_compile.CompileError, match=r"131073 full-length IPv4 source prefixes exceed the 131072"):
        host(state="overridden", config=[SSH, BLOCK], sets={"blocklist": entries})
    assert host.state_file.read_text() == state_before
    assert sorted(path.name for path in host.state_file.parent.iterdir()) == ["eth0.json", "eth0.names"]


def test_the_host_is_asked_by_digest_first_unless_the_file_is_new_to_this_controller(tmp_path):
    path = tmp_path / "drop.txt"
    path.write_text(BLOCKLIST_TEXT)
    args, content = module_args(blocklist_args(path))
    assert not probe_first(args, content), "just parsed: no host can have it from here"
    args, content = module_args(blocklist_args(path))
    assert probe_first(args, content) and not probe_first(args, content, wrap_async=True)
    inline = module_args({"interface": "eth0", "config": [SSH], "sets": {"admins": ["198.18.0.0/24"]}})
    assert probe_first(*inline)
