"""Shadow rule sets, packet by packet: the enforced set decides and counts as without a shadow set; the shadow
set counts by reason, by rule and by disagreement what it would have done, and samples its would-be drops marked
as shadow. Random enforced and shadow rule lists x random frames, program vs reference."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel, _fw_slots, _layout
from tests.helpers import reference

from .frames import UDP_, FrameSpec, frames_for
from .test_differential import CASES, SETTINGS, address_sets, rule_lists, rules, set_rules

RULE_LISTS = rule_lists(st.one_of(rules(), set_rules()), st.one_of(rules(True), set_rules(True)))
UDP_FRAMES = frames_for([FrameSpec("198.18.0.1", "198.18.0.2", UDP_, dport=53)])


def shadow_stats(firewall):
    records = _fw_kernel.PerCpuRecords(firewall.maps["xf_shadow_stats"], _layout.SHADOW_NEW_PASSES + 1)
    return [records.summed(index) for index in range(_layout.SHADOW_NEW_PASSES + 1)]


@settings(max_examples=120, **SETTINGS)
@given(enforced=RULE_LISTS, shadow=RULE_LISTS, sets=address_sets(), enforced_default=CASES["default_action"],
       shadow_default=CASES["default_action"], specs=CASES["specs"])
def test_shadow_counts_what_it_would_do_and_decides_nothing(firewall, enforced, shadow, sets, enforced_default,
                                                            shadow_default, specs):
    firewall.apply(enforced, enforced_default, sets=sets)
    firewall.install_shadow(shadow, shadow_default, sets=sets)
    mismatches = firewall.check(frames_for(specs))
    assert mismatches == [], "enforced %s (%s), shadow %s (%s), sets %s:\n%s" % (
        [rule.to_dict() for rule in enforced], enforced_default, [rule.to_dict() for rule in shadow], shadow_default,
        sets, "\n".join(mismatches[:5]))


def test_promote_switches_to_the_shadow_set_in_one_word(firewall):
    enforced = reference.parse_rules([{"action": "pass", "protocol": "udp"}])
    shadow = reference.parse_rules([{"action": "drop", "protocol": "udp"}])
    firewall.apply(enforced, "pass")
    firewall.install_shadow(shadow, "pass")
    active = _fw_kernel.read_config(firewall.maps)[0]
    assert _fw_kernel.shadow_slot(firewall.maps) == 1 - active
    _fw_slots.promote_shadow(firewall.maps)
    assert _fw_kernel.read_config(firewall.maps)[0] == 1 - active
    assert _fw_kernel.shadow_slot(firewall.maps) is None
    kernel = _fw_kernel.KernelRuleset(firewall.maps)
    assert kernel.entries() == [{"action": "drop", "protocol": "udp"}]
    # the harness now checks the promoted set as the enforced one, and nothing as a shadow
    firewall.rules, firewall.counters, firewall.positions = shadow, firewall.shadow.counters, firewall.shadow.positions
    firewall.shadow = None
    stats_before = shadow_stats(firewall)
    assert firewall.check(UDP_FRAMES) == []
    assert shadow_stats(firewall) == stats_before


def test_discard_stops_the_shadow_counts(firewall):
    firewall.apply(reference.parse_rules([{"action": "pass", "protocol": "udp"}]), "pass")
    firewall.install_shadow(reference.parse_rules([{"action": "drop", "protocol": "udp"}]), "pass")
    assert _fw_slots.discard_shadow(firewall.maps)
    assert not _fw_slots.discard_shadow(firewall.maps)
    firewall.shadow = None
    stats_before = shadow_stats(firewall)
    assert firewall.check(UDP_FRAMES) == []
    assert shadow_stats(firewall) == stats_before
