"""xdp_rules' resource logic: identity, the five states, summary and diff, lockout guard, state file,
and whole runs against the real firewall maps (loaded here, pinned in a private bpffs mount)."""

import ipaddress
import json
import os
import subprocess
import time
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from ansible_collections.xdpfleet.xdp.plugins.action.xdp_rules import module_args_with_content
from ansible_collections.xdpfleet.xdp.plugins.module_utils import (
    _errors, _fw_compile, _fw_diff, _fw_input, _fw_kernel, _fw_lockout, _fw_model, _fw_run, _fw_slots, _fw_states,
    _fw_store, _layout, _libbpf, _restore)
from tests.helpers import reference
from tests.helpers.slots import compiled_contents, slot_contents

REPO = Path(__file__).resolve().parents[2]
SSH_FROM_ADMIN = {"SSH_CONNECTION": "198.18.0.1 50022 198.18.0.11 22"}


def rule(action, **fields):
    return dict(fields, action=action)


SSH = rule("pass", name="ssh", protocol="tcp", port=22)
WEB = rule("pass", protocol="tcp", port="80-443")
BAD = rule("drop", source="198.19.0.0/16")


# --- identity and states ----------------------------------------------------------------


def test_named_rule_is_identified_by_name_and_others_by_match():
    assert _fw_model.rule_key(SSH) == ("name", "ssh")
    assert _fw_model.rule_key(BAD) == ("match", "198.19.0.0/16") + (None,) * (len(_fw_model.MATCH_FIELDS) - 1)
    assert _fw_model.rule_key(dict(BAD, action="pass")) == _fw_model.rule_key(BAD)


def test_merged_updates_in_place_keeping_fields_left_out():
    have = [SSH, BAD]
    after = _fw_states.desired_rules("merged", have, [{"name": "ssh", "action": "drop", "port": 2222}])
    assert after == [rule("drop", name="ssh", protocol="tcp", port=2222), BAD]


def test_merged_inserts_a_new_rule_after_its_predecessor_in_config():
    have = [SSH, BAD]
    after = _fw_states.desired_rules("merged", have, [SSH, WEB])
    assert after == [SSH, WEB, BAD]


def test_merged_puts_a_leading_new_rule_before_the_first_existing_config_rule():
    spare = rule("pass", source="198.19.1.0/24")
    after = _fw_states.desired_rules("merged", [SSH, BAD], [spare, BAD])
    assert after == [SSH, spare, BAD]


def test_merged_appends_rules_when_none_of_config_exists():
    assert _fw_states.desired_rules("merged", [SSH], [BAD, WEB]) == [SSH, BAD, WEB]


def test_merged_of_existing_rules_changes_nothing():
    have = [SSH, WEB, BAD]
    assert _fw_states.desired_rules("merged", have, [BAD, SSH]) == have


def test_replaced_drops_the_fields_left_out():
    after = _fw_states.desired_rules("replaced", [SSH, BAD], [rule("drop", name="ssh", port=22)])
    assert after == [rule("drop", name="ssh", port=22), BAD]


def test_overridden_is_exactly_config():
    assert _fw_states.desired_rules("overridden", [SSH, BAD, WEB], [WEB, SSH]) == [WEB, SSH]


def test_deleted_removes_by_identity_and_everything_without_config():
    have = [SSH, WEB, BAD]
    assert _fw_states.desired_rules("deleted", have, [{"name": "ssh"}, dict(BAD, action="pass")]) == [WEB]
    assert _fw_states.desired_rules("deleted", have, []) == []


def test_gathered_keeps_the_rules():
    assert _fw_states.desired_rules("gathered", [SSH, BAD], [WEB]) == [SSH, BAD]


@pytest.mark.parametrize("state", ["merged", "replaced", "overridden"])
def test_two_rules_with_one_identity_are_refused(state):
    with pytest.raises(_errors.XdpfleetError, match="same identity.*match ip from 198.19.0.0/16"):
        _fw_states.desired_rules(state, [], [BAD, dict(BAD, action="pass")])


def test_rules_sharing_addresses_are_apart_by_their_other_matches_and_named_rules_by_name_alone():
    shared = [BAD, dict(BAD, protocol="tcp"), dict(BAD, protocol="tcp", tcp_flags="syn")]
    assert _fw_states.desired_rules("overridden", [], shared) == shared
    with pytest.raises(_errors.XdpfleetError, match="same identity.*tcp_flags syn"):
        _fw_states.desired_rules("overridden", [], shared + [dict(BAD, action="pass", protocol="tcp", tcp_flags="syn")])
    with pytest.raises(_errors.XdpfleetError, match="same identity.*name 'n'"):
        _fw_states.desired_rules("overridden", [], [dict(BAD, name="n"), dict(WEB, name="n")])


# --- summary and diff ---------------------------------------------------------------------


def test_compare_counts_added_removed_changed_and_moved():
    before = [SSH, WEB, BAD]
    after = [dict(BAD, action="pass"), SSH, rule("drop", protocol="icmp")]
    summary, lines = _fw_diff.compare(before, after)
    assert summary == {"added": 1, "removed": 1, "changed": 1}
    assert lines == [
        "- pass tcp from any to any port 80-443",
        "- drop ip from 198.19.0.0/16 to any",
        "+ pass ip from 198.19.0.0/16 to any (at 1)",
        "+ drop icmp from any to any (at 3)",
    ]


def test_a_moved_rule_counts_as_changed():
    summary, lines = _fw_diff.compare([SSH, WEB, BAD], [BAD, SSH, WEB])
    assert summary == {"added": 0, "removed": 0, "changed": 1}
    assert lines == ["~ drop ip from 198.19.0.0/16 to any (moved to 1)"]


def _edited(sources, edits):
    """Rules with these sources (all drop), after (position, edit) edits: flip its action, give it another
    source, remove it, or move it to the end; then new rules appended."""
    rules = [rule("drop", source="198.19.%d.0/24" % number) for number in sources]
    for position, edit in edits:
        position %= len(rules) or 1
        if not rules or edit == "append":
            rules.append(rule("drop", source="198.18.%d.0/24" % (len(rules) + position)))
        elif edit == "flip":
            rules[position] = dict(rules[position], action="pass")
        elif edit == "replace":
            rules[position] = rule("drop", source="198.18.%d.0/24" % (100 + position))
        elif edit == "remove":
            del rules[position]
        else:
            rules.append(rules.pop(position))
    return rules


@given(st.integers(1, 40), st.lists(st.tuples(st.integers(0, 99), st.sampled_from(
    ["flip", "replace", "remove", "move", "append"])), max_size=8))
def test_the_in_place_shortcut_counts_what_the_full_comparison_counts(count, edits):
    before = _edited(range(count), [])
    after = _edited(range(count), edits)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_fw_diff, "_changed_in_place", lambda *args: None)
        full = _fw_diff.compare(before, after)[0]
    assert _fw_diff.compare(before, after)[0] == full


def test_equal_lists_have_no_lines():
    assert _fw_diff.compare([SSH, BAD], [SSH, BAD]) == ({"added": 0, "removed": 0, "changed": 0}, [])


def test_rule_line_names_the_rule():
    line = _fw_model.rule_line(rule("drop", name="x", protocol="tcp", destination="198.18.0.0/24", port=22))
    assert line == "drop tcp from any to 198.18.0.0/24 port 22 (x)"


# --- input validation -------------------------------------------------------------------------


def test_items_are_canonicalised_and_every_error_is_listed():
    entries = _fw_input.Entries()
    assert entries.from_items([{"action": "drop", "protocol": "TCP", "port": "22-22", "name": "n"}]).entries == \
        [{"action": "drop", "protocol": "tcp", "port": 22, "name": "n"}]
    with pytest.raises(_fw_model.RuleError) as error:
        entries.from_items([{"action": "drop", "source": "198.18.0.1/15"}, {"action": "maybe"},
                            {"action": "drop", "sorce": "198.18.0.0/15"}])
    assert [message.split(":")[0] for message in error.value.errors] == \
        ["config[0].source", "config[1].action", "config[2].sorce"]


def test_entry_values_leave_out_the_keys_beyond_the_plain_ones_when_none_is_set():
    plain = _fw_input.entry_values(dict(BAD, name="bad"))
    assert plain == ("drop", "198.19.0.0/16") + (None,) * (len(_fw_model.PLAIN_KEYS) - 2)
    assert _fw_input.entry_values(dict(BAD, ttl=None)) == plain
    assert _fw_input.entry_values(dict(BAD, ttl=64)) == tuple(map(dict(BAD, ttl=64).get, _fw_model.RULE_KEYS))
    assert _fw_model.pack_canonical(plain) == _fw_model.pack_canonical(plain + _fw_model.NOT_PLAIN) == \
        _fw_model.pack_rule(_fw_model.parse_rule(BAD))


def test_parsed_items_are_timed_when_an_item_new_to_the_remembered_entries_has_a_deadline_or_delay():
    timed = dict(BAD, expires_at="2099-01-01T00:00:00Z")
    entries = _fw_input.Entries()
    entries.remember([SSH, timed], lambda: [])
    assert not entries.from_items([SSH, WEB]).timed
    assert entries.from_items([SSH, dict(WEB, expires_after=60)]).timed
    assert entries.from_items([SSH, dict(WEB, expires_at="2099-01-01T00:00:00Z")]).timed
    assert not entries.from_items([SSH, timed]).timed  # the remembered entries say so for themselves


def test_a_known_canonical_item_skips_parsing_but_not_key_checks():
    entries = _fw_input.Entries()
    entries.remember([BAD], lambda: pytest.fail("rules resolved without need"))
    assert entries.from_items([dict(BAD, name="bad")]).entries == [dict(BAD, name="bad")]
    with pytest.raises(_fw_model.RuleError, match="unknown key"):
        entries.from_items([dict(BAD, comment="x")])
    with pytest.raises(_fw_model.RuleError, match="port"):
        entries.from_items([rule("drop", protocol="tcp", port=True)])


# --- lockout guard ------------------------------------------------------------------------------


def guard(entries, default_action, environ=None):
    """The lockout guard's refusal of a rule set, or None."""
    environ = SSH_FROM_ADMIN if environ is None else environ
    packed = [_fw_model.pack_rule(_fw_model.parse_rule(dict((k, v) for k, v in entry.items() if k != "name")))
              for entry in entries]
    try:
        _fw_lockout.check_lockout(entries, packed, default_action, environ)
    except _fw_lockout.LockoutError as error:
        return str(error)
    return None


def test_lockout_names_the_rule_that_drops_the_ssh_packet():
    entries = [WEB, rule("drop", name="no-ssh", protocol="tcp", port="20-30")]
    message = guard(entries, "pass")
    assert message.startswith("rule 2 (drop tcp from any to any port 20-30 (no-ssh)) would drop this SSH")
    assert "tcp from 198.18.0.1 port 50022 to 198.18.0.11 port 22" in message


def test_lockout_names_the_default_action():
    assert guard([WEB], "drop").startswith("the default action drop would drop")


def test_lockout_spares_a_session_an_earlier_rule_passes_or_no_session():
    admins = rule("pass", source="198.18.0.1/32", protocol="tcp", port=22)
    assert guard([admins, rule("drop", protocol="tcp", port=22)], "drop") is None
    assert guard([rule("drop", source="198.18.0.2/32")], "pass") is None
    assert guard([rule("drop", protocol="tcp")], "pass", environ={}) is None


# --- the desired-state file --------------------------------------------------------------------------


def test_state_file_round_trip_and_atomic_replace(tmp_path):
    assert _fw_store.read_state("eth0", str(tmp_path)) is None
    _fw_store.write_state("eth0", {"rules": [SSH], "digest": "a"}, str(tmp_path))
    _fw_store.write_state("eth0", {"rules": [BAD], "digest": "b"}, str(tmp_path))
    assert _fw_store.read_state("eth0", str(tmp_path)) == {"rules": [BAD], "digest": "b", "version": 1}
    assert sorted(os.listdir(tmp_path)) == ["eth0.json", "eth0.names", "eth0.previous.json"]
    previous = _fw_store.read_state("eth0", path=_fw_store.previous_path("eth0", str(tmp_path)))
    assert previous == {"rules": [SSH], "digest": "a", "version": 1}


def test_names_index_answers_only_for_its_rule_set(tmp_path):
    named = dict(BAD, name="no-bad")
    _fw_store.write_state("eth0", {"rules": [SSH, named], "digest": "b"}, str(tmp_path))
    assert _fw_store.read_names("eth0", "b", str(tmp_path)) == {0: "ssh", 1: "no-bad"}
    assert _fw_store.read_names("eth0", "other", str(tmp_path)) == {}
    assert _fw_store.read_names("eth1", "b", str(tmp_path)) == {}


# --- whole runs on the real maps ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def firewall_object(tmp_path_factory):
    target = tmp_path_factory.mktemp("bpf") / "xdp_firewall.o"
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "BUILD=%s" % target.parent], check=True)
    return target


@pytest.fixture
def host(tmp_path, firewall_object):
    """A loaded firewall with its maps pinned in a private bpffs; yields run(request) -> result."""
    bpffs = tmp_path / "bpffs"
    bpffs.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)
    try:
        with _libbpf.BpfObject(str(firewall_object)) as bpf_object:
            bpf_object.load()
            for bpf_map in bpf_object.maps:
                if bpf_map.name.startswith("xf_"):
                    bpf_map.pin(str(bpffs / bpf_map.name))

            def run(check_mode=False, environ=None, **request):
                request = dict(dict(interface="eth0", pin_dir=str(bpffs), state="merged"), **request)
                return _fw_run.run(request, check_mode, environ or {}, str(tmp_path / "etc"), str(tmp_path / "run"))
            run.maps = reference.map_fds(bpf_object)
            run.state_file = tmp_path / "etc" / "eth0.json"
            run.pin_dir = str(bpffs)
            yield run
    finally:
        subprocess.run(["umount", str(bpffs)], check=True)


def kernel_rules(maps):
    kernel = _fw_kernel.KernelRuleset(maps)
    return [kernel.rule_at(number)[0].to_dict() for number in range(len(kernel))]


def test_run_writes_the_kernel_and_the_state_file_then_is_idempotent(host):
    first = host(state="overridden", config=[SSH, BAD], default_action="drop", sampling=10)
    assert first["changed"] and first["summary"] == {"added": 2, "removed": 0, "changed": 0}
    assert first["before"] == [] and first["after"] == [SSH, BAD]
    assert kernel_rules(host.maps) == [rule("pass", protocol="tcp", port=22), BAD]
    active, sampling = _fw_kernel.read_config(host.maps)[:2]
    assert sampling == 10
    stored = json.loads(host.state_file.read_text())
    assert (stored["rules"], stored["default_action"], stored["sampling"]) == ([SSH, BAD], "drop", 10)
    second = host(state="overridden", config=[SSH, BAD], default_action="drop", sampling=10)
    assert not second["changed"] and "after" not in second and second["before"] == [SSH, BAD]
    assert _fw_kernel.read_config(host.maps)[0] == active


def test_config_as_json_text_is_the_same_request_as_the_list(host):
    """What the action plugin sends: config as one JSON text."""
    args = module_args_with_content({"interface": "eth0", "state": "overridden", "config": [SSH, BAD]})
    assert isinstance(args["config"], str)
    first = host(**args)
    assert first["changed"] and first["after"] == [SSH, BAD]
    assert not host(state="overridden", config=[SSH, BAD])["changed"]
    with pytest.raises(_fw_model.RuleError) as error:
        host(state="overridden", config='[{"action": "drop"')
    assert error.value.errors[0].startswith("config: not a JSON list of rules")
    with pytest.raises(_fw_model.RuleError) as error:
        host(state="overridden", config='{"action": "drop"}')
    assert error.value.errors == ["config: must be a list of rules"]
    assert kernel_rules(host.maps) == [rule("pass", protocol="tcp", port=22), BAD]


def test_check_mode_predicts_and_changes_nothing(host):
    host(state="overridden", config=[SSH])
    result = host(check_mode=True, config=[BAD], diff=True)
    assert result["changed"] and result["after"] == [SSH, BAD]
    assert result["diff"]["prepared"] == "+ drop ip from 198.19.0.0/16 to any (at 2)"
    assert kernel_rules(host.maps) == [rule("pass", protocol="tcp", port=22)]
    assert json.loads(host.state_file.read_text())["rules"] == [SSH]


def test_gathered_returns_what_was_set_with_names(host):
    host(state="overridden", config=[SSH, WEB, BAD])
    result = host(state="gathered")
    assert not result["changed"] and result["gathered"] == [SSH, WEB, BAD]


def test_kernel_is_the_truth_when_it_differs_from_the_state_file(host):
    host(state="overridden", config=[SSH, BAD])
    host.state_file.unlink()
    result = host(state="gathered")
    assert result["gathered"] == [rule("pass", protocol="tcp", port=22), BAD]
    assert host(state="merged", config=[SSH])["summary"] == {"added": 1, "removed": 0, "changed": 0}


def test_lockout_refuses_the_change_and_leaves_the_kernel(host):
    host(state="overridden", config=[SSH])
    with pytest.raises(_errors.XdpfleetError, match="default action drop would drop this SSH"):
        host(state="overridden", config=[BAD], default_action="drop", environ=SSH_FROM_ADMIN)
    assert kernel_rules(host.maps) == [rule("pass", protocol="tcp", port=22)]
    assert host(state="overridden", config=[BAD], default_action="drop", environ=SSH_FROM_ADMIN,
                allow_lockout=True)["changed"]


def test_kept_rules_keep_their_hit_counters(host):
    host(state="overridden", config=[SSH, BAD])
    counters = _fw_kernel.KernelRuleset(host.maps).counters()
    host(state="merged", config=[rule("drop", protocol="icmp"), SSH])
    kernel = _fw_kernel.KernelRuleset(host.maps)
    after = dict((kernel_rule.port, counter) for kernel_rule, counter in map(kernel.rule_at, range(len(kernel))))
    assert after[(22, 22)] == counters[0]


def test_missing_pins_are_a_clear_error(tmp_path):
    with pytest.raises(_errors.XdpfleetError, match="not attached"):
        _fw_run.run({"interface": "eth0", "pin_dir": str(tmp_path), "state": "gathered"}, False, {},
                    str(tmp_path), str(tmp_path / "run"))


def test_compare_of_rules_changed_in_place_matches_the_general_comparison():
    before = [SSH, WEB, BAD]
    after = [SSH, dict(WEB, action="drop"), BAD]
    assert _fw_diff.compare(before, after) == ({"added": 0, "removed": 0, "changed": 1}, [
        "- pass tcp from any to any port 80-443", "+ drop tcp from any to any port 80-443 (at 2)"])
    swapped = [SSH, BAD, WEB]
    assert _fw_diff.compare(before, swapped)[0] == {"added": 0, "removed": 0, "changed": 1}


def test_compare_of_rules_replaced_in_place_keys_only_the_rules_that_differ(monkeypatch):
    before = [SSH, WEB, BAD]
    after = [SSH, dict(WEB, action="drop"), rule("drop", protocol="icmp")]
    keyed, rule_key = [], _fw_model.rule_key
    monkeypatch.setattr(_fw_diff, "rule_key", lambda item: keyed.append(item) or rule_key(item))
    assert _fw_diff.compare(before, after) == ({"added": 1, "removed": 1, "changed": 1}, [
        "- drop ip from 198.19.0.0/16 to any",
        "- pass tcp from any to any port 80-443", "+ drop tcp from any to any port 80-443 (at 2)",
        "+ drop icmp from any to any (at 3)"])
    assert SSH not in keyed
    # BAD moves up into WEB's position: not in place, so the general comparison decides
    assert _fw_diff.compare(before, [SSH, BAD, rule("drop", protocol="icmp")]) == (
        {"added": 1, "removed": 1, "changed": 0},
        ["- pass tcp from any to any port 80-443", "+ drop icmp from any to any (at 3)"])


def test_the_same_config_again_is_decided_by_digest_without_rule_work(host, monkeypatch):
    config = [SSH, BAD, WEB]
    host(state="overridden", config=config)
    stored = json.loads(host.state_file.read_text())
    assert stored["rules_digest"] == _fw_store.json_digest(_fw_store.entries_json(config))

    def no_rule_work(*args):
        raise AssertionError("rules looked at one by one")
    monkeypatch.setattr(_fw_input.Entries, "from_items", no_rule_work)
    for state in ("overridden", "merged", "replaced"):
        result = host(state=state, config=config)
        assert not result["changed"] and result["before"] == config
    assert host(state="overridden", config=config, sampling=5)["changed"]
    assert _fw_kernel.read_config(host.maps)[1] == 5


def test_the_action_plugins_text_of_the_stored_rules_is_not_even_parsed(host, monkeypatch):
    config = [SSH, BAD, WEB]
    host(state="overridden", config=config)
    text = module_args_with_content({"config": config})["config"]
    assert _fw_store.json_digest(text) == json.loads(host.state_file.read_text())["rules_digest"]

    def no_parsing(config):
        raise AssertionError("config parsed")
    monkeypatch.setattr(_fw_run, "config_items", no_parsing)
    result = host(state="overridden", config=text)
    assert not result["changed"] and result["before"] == config


def test_large_rule_sets_leave_before_and_after_out_unless_asked(host, monkeypatch):
    monkeypatch.setattr(_fw_run, "FULL_LISTS_UP_TO", 2)
    result = host(state="overridden", config=[SSH, BAD, WEB])
    assert "before" not in result and "after" not in result
    assert result["rule_count"] == {"before": 0, "after": 3}
    assert result["summary"] == {"added": 3, "removed": 0, "changed": 0}
    result = host(state="overridden", config=[SSH, WEB], return_rules=True)
    assert result["before"] == [SSH, BAD, WEB] and result["after"] == [SSH, WEB]
    assert host(state="gathered")["gathered"] == [SSH, WEB]


def test_a_change_in_place_keeps_the_other_counters_and_zeroes_the_new_ones(host):
    host(state="overridden", config=[SSH, BAD, WEB])
    counters = _fw_kernel.KernelRuleset(host.maps).counters()
    spare = max(counters) + 1
    dirty = b"\x01" * _layout.DATAREC.size * _libbpf.num_possible_cpus()
    _libbpf.map_update(host.maps["xf_hits"], _layout.U32.pack(spare), dirty)
    host(state="overridden", config=[SSH, dict(BAD, action="pass"), WEB])
    after = _fw_kernel.KernelRuleset(host.maps).counters()
    assert after[0] == counters[0] and after[2] == counters[2] and after[1] == spare
    assert reference.read_hits(host.maps, [spare]) == [{"packets": 0, "bytes": 0}]


def test_lockout_guard_reads_packed_rules(host):
    with pytest.raises(_errors.XdpfleetError, match=r"rule 2 \(drop ip from 198.18.0.0/24 to any\)"):
        host(state="overridden", config=[WEB, rule("drop", source="198.18.0.0/24")], environ=SSH_FROM_ADMIN)
    assert host(state="overridden", config=[rule("pass", source="198.18.0.1/32"), rule("drop", source="198.18.0.0/24")],
                environ=SSH_FROM_ADMIN)["changed"]


@pytest.mark.parametrize("current, field, lookalike", [
    (rule("drop", protocol="tcp", port=1), "port", True),
    (rule("drop", protocol="icmp", icmp_type=8, icmp_code=0), "icmp_code", False),
    (rule("drop", protocol="icmp", icmp_type=0), "icmp_type", False),
    (rule("drop", protocol="udp", source_port=1), "source_port", True),
    (rule("drop", ttl=1), "ttl", True),
    (dict(rule("rate_limit", protocol="udp", port=53, pps=1, burst=1), per="source", per_prefix=32, per_prefix6=64),
     "pps", True),
])
def test_an_item_equal_to_the_current_rule_at_its_position_is_taken_as_it_is_but_a_bool_is_not(current, field,
                                                                                               lookalike):
    entries = _fw_input.Entries()
    entries.remember([BAD, current], lambda: pytest.fail("rules resolved without need"))
    assert entries.from_items([BAD, dict(current)]).entries == [BAD, current]
    with pytest.raises(_fw_model.RuleError, match=r"config\[1\].%s" % field):
        entries.from_items([BAD, dict(current, **{field: lookalike})])
    with pytest.raises(_fw_model.RuleError, match=r"config\[0\].%s" % field):  # known, at another position
        entries.from_items([dict(current, **{field: lookalike}), BAD])


def compiled_rules(rules, default_action, counters):
    return compiled_contents(reference.compile_rules(reference.parse_rules(rules), default_action, counters))


def assert_both_slots_hold(maps, rules, default_action):
    counters = _fw_kernel.KernelRuleset(maps).counters()
    expected = compiled_rules([dict((k, v) for k, v in item.items() if k != "name") for item in rules],
                              default_action, counters)
    assert slot_contents(maps, 0) == expected
    assert slot_contents(maps, 1) == expected


NEAR = rule("drop", source="198.19.1.0/24")


def test_an_action_change_writes_only_the_changed_rules_and_both_slots_end_alike(host, monkeypatch):
    host(state="overridden", config=[SSH, BAD, WEB, NEAR])
    assert_both_slots_hold(host.maps, [SSH, BAD, WEB, NEAR], "pass")
    monkeypatch.setattr(_fw_run, "compile_packed", lambda *args: pytest.fail("compiled in full"))
    changed = [SSH, dict(BAD, action="pass"), WEB, dict(NEAR, action="pass")]
    assert host(state="overridden", config=changed, default_action="drop")["summary"]["changed"] == 2
    monkeypatch.undo()
    assert_both_slots_hold(host.maps, changed, "drop")


def test_a_match_change_in_place_or_an_inactive_slot_changed_behind_our_back_is_compiled_in_full(host, monkeypatch):
    compile_packed, compiled = _fw_compile.compile_packed, []
    monkeypatch.setattr(_fw_run, "compile_packed", lambda *args: compiled.append(1) or compile_packed(*args))
    host(state="overridden", config=[SSH, BAD, WEB])
    moved = [SSH, dict(BAD, source="198.19.0.0/17"), WEB]
    host(state="overridden", config=moved)
    assert len(compiled) == 2
    assert_both_slots_hold(host.maps, moved, "pass")
    del compiled[:]
    inactive = 1 - _fw_kernel.read_config(host.maps)[0]
    stray = _fw_model.pack_rule(_fw_model.parse_rule(rule("drop", source="198.18.9.0/24")))
    _libbpf.map_update(host.maps["xf_rules_%d" % inactive], _layout.U32.pack(1), stray)
    flipped = [SSH, dict(moved[1], action="pass"), WEB]
    host(state="overridden", config=flipped)
    assert len(compiled) == 1
    assert_both_slots_hold(host.maps, flipped, "pass")
    del compiled[:]
    active, rate, metas = _fw_kernel.read_config(host.maps)
    metas[1 - active] = _fw_slots.UNFINISHED_META  # as a run stopped while writing that slot leaves it
    _fw_slots.write_config(host.maps, active, rate, metas)
    host(state="overridden", config=moved)
    assert len(compiled) == 1
    assert_both_slots_hold(host.maps, moved, "pass")


def test_fresh_counters_avoid_the_slots_other_rules_keep():
    first, second = reference.parse_rules([{"action": "drop", "port": 1}, {"action": "pass", "port": 1}])
    counters, fresh = _fw_compile.assign_counters([second], [first], [5], live=[0, 1, 2, 5])
    assert counters == [3] and fresh == [3]


def test_overridden_skips_the_twin_check_only_where_a_known_unique_set_keeps_its_identities():
    have = [SSH, BAD, WEB]
    flipped = [SSH, dict(BAD, action="pass"), WEB]
    assert _fw_states.desired_rules("overridden", have, flipped, have_unique=True) == flipped
    with pytest.raises(_errors.XdpfleetError, match="same identity"):
        _fw_states.desired_rules("overridden", have, [SSH, BAD, dict(BAD, action="pass")], have_unique=True)
    with pytest.raises(_errors.XdpfleetError, match="same identity"):
        _fw_states.desired_rules("overridden", [BAD, BAD], [BAD, BAD], have_unique=False)


def test_the_module_validates_config_itself_naming_position_field_and_fix(host):
    """config bypasses Ansible's argument spec (too slow for 100,000 rules): the module's own check answers."""
    args = {"interface": "xfunit0", "pin_dir": str(host.state_file.parent.parent / "bpffs"), "state": "overridden",
            "config": [{"action": "drop", "source": "198.18.0.0/24"}, {"action": "drop", "port": 70000},
                       {"action": "drop", "source": "198.18.0.1/24"}]}
    # in a mount namespace of its own with a private /run, so that the module's host lock leaves no file here
    private_run = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs tmpfs /run && exec "$0" "$@"']
    done = subprocess.run(private_run + [sys.executable, str(REPO / "plugins" / "modules" / "xdp_rules.py")],
                          input=json.dumps({"ANSIBLE_MODULE_ARGS": module_args_with_content(args)}), capture_output=True,
                          text=True, check=False, env=dict(os.environ, PYTHONPATH=str(REPO / ".collections")))
    result = json.loads(done.stdout)
    assert result["failed"] and "config[1].port: 70000 is not a port (1-65535" in result["msg"]
    assert "config[2].source: 198.18.0.1/24 has host bits set (did you mean 198.18.0.0/24?)" in result["msg"]


def test_rules_removed_and_added_leave_the_others_where_they_are(host):
    many = [rule("drop", source="198.18.1.%d/32" % number) for number in range(1, 11)]
    host(state="overridden", config=many)
    positions = _fw_kernel.KernelRuleset(host.maps).positions
    changed = many[:3] + many[4:] + [rule("drop", source="198.18.2.1/32")]
    host(state="overridden", config=changed)
    kernel = _fw_kernel.KernelRuleset(host.maps)
    assert list(kernel.positions) == list(positions[:3]) + list(positions[4:]) + [10]
    assert kernel.entries() == changed and kernel.number_at(positions[3]) is None
    assert kernel.number_at(10) == 9
    assert host(state="overridden", config=changed)["changed"] is False


def test_identities_of_a_list_are_those_of_its_rules():
    rules = [SSH, BAD, WEB, rule("drop", name="named", protocol="icmp"), rule("pass", port=1)]
    assert _fw_states._identities(rules) == list(map(_fw_model.rule_key, rules))
    assert _fw_states._identities([SSH, BAD]) == [_fw_model.rule_key(SSH), _fw_model.rule_key(BAD)]


def test_the_rules_are_walked_once_when_the_config_is_the_new_list(host, monkeypatch):
    many = [rule("drop", source="198.18.1.%d/32" % number) for number in range(1, 41)]
    host(state="overridden", config=many)
    walks, real_equal_pairs = [], _fw_diff.equal_pairs
    for walker in (_fw_input, _fw_diff):
        monkeypatch.setattr(walker, "equal_pairs", lambda *args: walks.append(1) or real_equal_pairs(*args))
    result = host(state="overridden", config=many[1:] + [rule("drop", source="198.18.2.1/32")])
    assert result["summary"] == {"added": 1, "removed": 1, "changed": 0} and len(walks) == 1


def test_the_boot_time_restore_brings_back_100000_rules(host, tmp_path):
    first = int(ipaddress.IPv4Address("198.18.0.0"))
    many = [rule("drop", source="%s/32" % ipaddress.IPv4Address(first + offset)) for offset in range(100000)]
    assert host(state="overridden", config=many)["rule_count"]["after"] == 100000
    assert _restore.rules_restored("eth0", host.pin_dir, str(tmp_path / "etc"), str(tmp_path / "run")) == \
        "100000 rules"
    assert _restore.rules_restored("eth1", host.pin_dir, str(tmp_path / "etc"), str(tmp_path / "run")) == \
        "no stored rules"


@pytest.mark.parametrize("where", ["nohz_full", "unknown architecture"])
def test_a_rule_switch_waits_for_a_grace_period_where_membarrier_cannot(host, monkeypatch, where):
    calls = []
    real_grace_period = _fw_slots.map_in_map_grace_period
    monkeypatch.setattr(_fw_slots, "map_in_map_grace_period", lambda: calls.append(1) or real_grace_period())
    if where == "nohz_full":  # the kernel answers EINVAL there, as to a command it does not know
        monkeypatch.setattr(_fw_slots, "MEMBARRIER_CMD_GLOBAL", 1 << 30)
    else:
        monkeypatch.setattr(_fw_slots, "MEMBARRIER_SYSCALL", {})
    assert host(state="overridden", config=[SSH, BAD])["changed"]
    assert kernel_rules(host.maps) == [rule("pass", protocol="tcp", port=22), BAD]
    assert len(calls) == 2  # before writing the inactive slot, and before rewriting the slot left


def test_a_rule_switch_uses_membarrier_where_it_can(host, monkeypatch):
    monkeypatch.setattr(_fw_slots, "map_in_map_grace_period", lambda: pytest.fail("membarrier was not used"))
    assert host(state="overridden", config=[SSH])["changed"]


def test_many_bad_rules_are_reported_by_the_first_few_and_a_count(host):
    config = [rule("drop", source="198.18.%d.%d/33" % divmod(number, 256)) for number in range(34000)]
    with pytest.raises(_fw_model.RuleError) as error:
        host(state="overridden", config=config)
    assert len(error.value.errors) == 34000
    message = str(error.value)
    assert message.startswith("config[0].source: '198.18.0.0/33' is not an IPv4/IPv6 address or CIDR")
    assert message.count("is not an IPv4/IPv6 address") == _errors.MESSAGES_SHOWN
    assert message.endswith("; and %d more" % (34000 - _errors.MESSAGES_SHOWN))
    assert not host.state_file.exists() and kernel_rules(host.maps) == []


def test_check_mode_before_the_firewall_is_attached_plans_against_a_fresh_one(tmp_path):
    request = {"interface": "eth0", "pin_dir": str(tmp_path / "none"), "state": "overridden",
               "config": [SSH, BAD], "default_action": "drop"}
    predicted = _fw_run.run(request, True, SSH_FROM_ADMIN, str(tmp_path / "etc"))
    assert predicted["changed"] and predicted["after"] == [SSH, BAD] and predicted["before"] == []
    with pytest.raises(_fw_lockout.LockoutError):
        _fw_run.run(dict(request, config=[BAD]), True, SSH_FROM_ADMIN, str(tmp_path / "etc"))
    with pytest.raises(_fw_model.RuleError, match=r"config\[0\].port"):
        _fw_run.run(dict(request, config=[dict(SSH, port=0)]), True, {}, str(tmp_path / "etc"))
    with pytest.raises(_fw_kernel.FirewallMissing, match="is not attached"):
        _fw_run.run(request, False, {}, str(tmp_path / "etc"), str(tmp_path / "run"))
    assert not (tmp_path / "etc").exists()


# --- rules that expire (issue 19) -------------------------------------------------------------------------


def wait_past(deadline_text):
    deadline = time.mktime(time.strptime(deadline_text, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    time.sleep(max(0.0, deadline + 1 - time.time()))


def test_a_deadline_is_kept_by_repeated_runs_and_the_run_after_it_removes_the_rule(host):
    block = dict(BAD, name="block", expires_after=2)
    first = host(state="overridden", config=[SSH, block])
    deadline = first["after"][1]["expires_at"]
    assert first["after"][1] == dict(BAD, name="block", expires_at=deadline) and first["expired"] == []
    assert _fw_kernel.KernelRuleset(host.maps).rule_at(1)[0].expires_at is not None
    assert not host(state="overridden", config=[SSH, block])["changed"]
    wait_past(deadline)
    predicted = host(check_mode=True, diff=True, state="merged", config=[SSH])
    assert predicted["changed"] and predicted["expired"] == [dict(BAD, name="block", expires_at=deadline)]
    assert "- drop ip from 198.19.0.0/16 to any expires %s (block)" % deadline in predicted["diff"]["prepared"]
    assert len(kernel_rules(host.maps)) == 2
    done = host(state="merged", config=[SSH])
    assert done["changed"] and done["expired"] == predicted["expired"] and done["after"] == [SSH]
    assert kernel_rules(host.maps) == [rule("pass", protocol="tcp", port=22)]
    again = host(state="merged", config=[SSH])
    assert not again["changed"] and again["expired"] == []
    rearmed = host(state="merged", config=[block])  # expires_after counts from the run that applies it anew
    assert rearmed["after"][1]["expires_at"] > deadline


def test_the_same_request_again_removes_rules_whose_deadline_passed(host):
    """Neither the action plugin's digest of an unchanged request nor the stored rules' digest keep an expired
    rule."""
    deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    config = [SSH, dict(BAD, expires_at=deadline)]
    args = module_args_with_content({"interface": "eth0", "state": "overridden", "config": config})
    host(**args)
    wait_past(deadline)
    result = host(**args)
    assert result["changed"] and result["expired"] == [dict(BAD, expires_at=deadline)]
    assert kernel_rules(host.maps) == [rule("pass", protocol="tcp", port=22)]
    deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    config = [SSH, dict(BAD, expires_at=deadline)]
    host(state="overridden", config=config)
    wait_past(deadline)
    result = host(state="overridden", config=config)
    assert result["changed"] and result["expired"] == [dict(BAD, expires_at=deadline)]


def test_a_stored_rule_set_restored_after_a_deadline_leaves_the_expired_rule_out(host):
    deadline = host(state="overridden", config=[SSH, dict(BAD, expires_after=2)])["after"][1]["expires_at"]
    stored = host.state_file.read_text()
    assert json.loads(stored)["next_expiry"] == deadline
    host(state="overridden", config=[])
    host.state_file.write_text(stored)  # the kernel no longer holds the stored rule set, as after a reboot
    wait_past(deadline)
    restored = host(state="overridden", config=json.loads(stored)["rules"])  # what _restore asks
    assert restored["expired"] == [dict(BAD, expires_at=deadline)] and restored["after"] == [SSH]
    with pytest.raises(_fw_model.RuleError, match=r"config\[1\].expires_at: .* is in the past"):
        host(state="overridden", config=json.loads(stored)["rules"])  # neither held nor stored any more: a mistake


def test_the_kernel_tells_whether_any_rule_has_a_deadline(host):
    host(state="overridden", config=[SSH, BAD])
    assert not _fw_kernel.KernelRuleset(host.maps).has_deadlines()
    host(state="merged", config=[dict(WEB, expires_after=3600)])
    assert _fw_kernel.KernelRuleset(host.maps).has_deadlines()
    assert not _fw_kernel.FreshRuleset.has_deadlines()


def test_a_change_of_settings_alone_keeps_the_stored_next_deadline(host):
    after = host(state="overridden", config=[SSH, dict(BAD, expires_after=3600)])["after"]
    assert host(state="overridden", config=after, sampling=5)["changed"]
    assert json.loads(host.state_file.read_text())["next_expiry"] == after[1]["expires_at"]
