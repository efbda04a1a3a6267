"""_fw_expiry: expires_after to a deadline that a run repeated keeps, and rules whose deadline passed."""

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_expiry

NOW = 1764957600  # 2025-12-05T18:00:00Z
BLOCK = {"action": "drop", "source": "198.18.7.0/24"}


def test_expires_after_counts_from_now_without_an_installed_rule():
    entries = [dict(BLOCK, expires_after=3600), {"action": "pass"}]
    resolved = _fw_expiry.resolve(entries, [], NOW + 0.9)
    assert resolved == [dict(BLOCK, expires_at="2025-12-05T19:00:00Z"), {"action": "pass"}]
    assert entries[0] == dict(BLOCK, expires_after=3600)  # entries are not changed in place


def test_an_installed_deadline_still_ahead_is_kept():
    installed = [dict(BLOCK, expires_at="2025-12-05T18:30:00Z")]
    assert _fw_expiry.resolve([dict(BLOCK, expires_after=3600)], installed, NOW) == installed
    named = [dict(BLOCK, name="block", expires_at="2025-12-05T18:30:00Z")]
    assert _fw_expiry.resolve([{"action": "drop", "name": "block", "expires_after": 60}], named, NOW) == [
        {"action": "drop", "name": "block", "expires_at": "2025-12-05T18:30:00Z"}]


def test_a_passed_or_other_rules_deadline_is_not_kept():
    passed = [dict(BLOCK, expires_at="2025-12-05T18:00:00Z")]
    other = [{"action": "drop", "source": "198.18.8.0/24", "expires_at": "2025-12-05T18:30:00Z"}]
    for installed in (passed, other):
        assert _fw_expiry.resolve([dict(BLOCK, expires_after=60)], installed, NOW) == [
            dict(BLOCK, expires_at="2025-12-05T18:01:00Z")]


def test_entries_without_expires_after_are_the_same_list():
    entries = [BLOCK]
    assert _fw_expiry.resolve(entries, [], NOW) is entries


def test_expired_splits_off_the_rules_whose_deadline_passed_in_order():
    rules = [dict(BLOCK, expires_at="2025-12-05T17:00:00Z"), {"action": "pass"},
             {"action": "drop", "port": 1, "expires_at": "2025-12-05T18:00:00Z"},
             {"action": "drop", "port": 2, "expires_at": "2025-12-05T18:00:01Z"}]
    assert _fw_expiry.expired(rules, NOW) == (rules[1::2], rules[0::2])
    assert _fw_expiry.expired(rules[1:2], NOW) == (rules[1:2], [])
    assert _fw_expiry.next_deadline(rules) == "2025-12-05T17:00:00Z" and _fw_expiry.next_deadline([BLOCK]) is None
    assert _fw_expiry.due("2025-12-05T18:00:00Z", NOW) and not _fw_expiry.due("2025-12-05T18:00:01Z", NOW)
    assert not _fw_expiry.due(None, NOW)


def test_lapsed_leaves_out_only_canonical_past_deadlines_of_held_rules():
    held = [dict(BLOCK, expires_at="2025-12-05T17:00:00Z")]
    items = [dict(held[0]), {"action": "drop", "port": 1, "expires_at": "2025-12-05T17:00:00Z"},
             dict(BLOCK, expires_at="2025-12-05T18:00:00+01:00"), {"action": "pass"}]
    assert _fw_expiry.lapsed(items, NOW, held) == (items[1:], items[:1])
    assert _fw_expiry.lapsed(items, NOW, []) == (items, [])
    assert _fw_expiry.lapsed("not a list", NOW, held) == ("not a list", [])
