"""xdp_facts' ranking of the most hit rules against the plain definition (a stable sort by packets)."""

from hypothesis import given, strategies as st

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _facts


def reference(packets_at, top):
    return sorted(range(len(packets_at)), key=lambda position: -packets_at[position])[:top]


@given(st.lists(st.integers(min_value=0, max_value=3), max_size=40), st.integers(min_value=0, max_value=45))
def test_most_hit_is_a_stable_ranking_by_packets(packets_at, top):
    assert _facts.most_hit(packets_at, top) == reference(packets_at, top)


def test_rules_without_hits_fill_the_ranking_in_position_order():
    assert _facts.most_hit([0, 5, 0, 0, 7, 5], 5) == [4, 1, 5, 0, 2]
