"""Property-based differential run: random rule lists x random frames, program vs reference.

250 examples x 40 frames = 10,000 frames checked; and a deliberately wrong compiler must be caught."""

import ipaddress

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_compile, _fw_model, _layout
from tests.helpers import reference

from .frames import GRE, ICMP_, ICMPV6_, TCP_, UDP_, FrameSpec, frames_for, mapped

HOSTS = ["198.18.0.1", "198.18.0.2", "198.18.1.1", "198.18.1.200", "198.19.0.1", "198.19.255.254"]
EDGE_PORTS = [1, 21, 22, 23, 79, 80, 81, 443, 1024, 65535]
FRAMES_PER_EXAMPLE = 40

ports = st.one_of(st.sampled_from(EDGE_PORTS), st.integers(1, 65535))


@st.composite
def networks(draw, family):
    host = draw(st.sampled_from(HOSTS))
    if family == 6:
        return ipaddress.ip_network((mapped(host), draw(st.sampled_from([0, 64, 96, 100, 111, 112, 120, 127, 128]))),
                                    strict=False)
    return ipaddress.ip_network((host, draw(st.sampled_from([0, 8, 15, 16, 23, 24, 31, 32]))), strict=False)


@st.composite
def rules(draw):
    family = draw(st.sampled_from([4, 6]))
    source = draw(st.one_of(st.none(), networks(family)))
    destination = draw(st.one_of(st.none(), networks(family)))
    protocol = draw(st.sampled_from([None, TCP_, UDP_, GRE, ICMP_ if family == 4 else ICMPV6_]))
    port = None
    if protocol in (None, TCP_, UDP_) and draw(st.booleans()):
        low, high = sorted((draw(ports), draw(ports)))
        port = (low, high)
    return _fw_model.Rule(draw(st.sampled_from(["drop", "pass"])), source, destination, protocol, port)


SET_NAMES = ["blocklist", "admins"]


@st.composite
def set_rules(draw):
    """A rule that names a set by source (with or without a destination) or by destination alone."""
    rule = draw(rules())
    if draw(st.booleans()):
        return rule._replace(source=None, source_set=draw(st.sampled_from(SET_NAMES)))
    return rule._replace(source=None, destination=None, destination_set=draw(st.sampled_from(SET_NAMES)))


@st.composite
def address_sets(draw):
    """{name: networks} of both set names: IPv4 and IPv6 mixed, overlaps and all."""
    return dict((name, draw(st.lists(st.one_of(networks(4), networks(6)), max_size=8))) for name in SET_NAMES)


@st.composite
def frame_specs(draw):
    family = draw(st.sampled_from([4, 6]))
    convert = mapped if family == 6 else str
    src, dst = (convert(draw(st.sampled_from(HOSTS))) for end in ("source", "destination"))
    proto = draw(st.sampled_from([TCP_, UDP_, GRE, ICMP_ if family == 4 else ICMPV6_]))
    return FrameSpec(src, dst, proto, draw(ports), vlans=draw(st.sampled_from([0, 0, 1, 2, 3])),
                     qinq=draw(st.booleans()), ip_options=draw(st.sampled_from([0, 0, 3, 40])) if family == 4 else 0,
                     ext=draw(st.lists(st.sampled_from(["hbh", "rt", "dst"]), max_size=3)) if family == 6 else (),
                     fragment=draw(st.sampled_from([None, None, "first", "later"])),
                     nd=proto == ICMPV6_ and draw(st.booleans()))


CASES = dict(rule_list=st.lists(rules(), max_size=12), default_action=st.sampled_from(["drop", "pass"]),
             specs=st.lists(frame_specs(), min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE))
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)


def program_agrees_with_reference(firewall, rule_list, default_action, specs, compiler=None, sets=None):
    firewall.apply(rule_list, default_action, compiler=compiler, sets=sets)
    mismatches = firewall.check(frames_for(specs))
    assert mismatches == [], "rules %s default %s sets %s:\n%s" % (
        [rule.to_dict() for rule in rule_list], default_action, sets, "\n".join(mismatches[:5]))


@settings(max_examples=250, **SETTINGS)
@given(**CASES)
def test_random_rules_and_frames(firewall, rule_list, default_action, specs):
    program_agrees_with_reference(firewall, rule_list, default_action, specs)


@settings(max_examples=150, **SETTINGS)
@given(rule_list=st.lists(st.one_of(rules(), set_rules()), max_size=12), sets=address_sets(),
       default_action=CASES["default_action"], specs=CASES["specs"])
def test_random_rules_with_address_sets(firewall, rule_list, sets, default_action, specs):
    program_agrees_with_reference(firewall, rule_list, default_action, specs, sets=sets)


def compiler_leaving_holes(rule_list, default_action):
    """Rules at positions 1, 4, 7...: what a rule set has after rules were removed between kept ones."""
    return _fw_compile.compile_packed([_fw_model.pack_rule(rule) for rule in rule_list], default_action,
                                      positions=[3 * number + 1 for number in range(len(rule_list))])


@settings(max_examples=150, **SETTINGS)
@given(**CASES)
def test_rules_at_positions_with_holes_between(firewall, rule_list, default_action, specs):
    program_agrees_with_reference(firewall, rule_list, default_action, specs, compiler=compiler_leaving_holes)


def compiler_flipping_first_action(rule_list, default_action):
    compiled = reference.compile_rules(rule_list, default_action)
    if compiled.rules:
        first = bytearray(compiled.rules[0])
        first[0] = _layout.XDP_ACTIONS["pass"] + _layout.XDP_ACTIONS["drop"] - first[0]
        compiled.rules[0] = bytes(first)
    return compiled


def test_a_wrong_compiler_is_caught(firewall):
    @settings(max_examples=200, phases=[Phase.generate], **SETTINGS)
    @given(**CASES)
    def with_wrong_compiler(rule_list, default_action, specs):
        program_agrees_with_reference(firewall, rule_list, default_action, specs,
                                      compiler=compiler_flipping_first_action)

    with pytest.raises(AssertionError, match="verdict"):
        with_wrong_compiler()
