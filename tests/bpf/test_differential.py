"""Property-based differential run: random rule lists x random frames, program vs reference.

250 examples x 40 frames = 10,000 frames checked; and a deliberately wrong compiler must be caught.
The rules draw the further matches (source_port, tcp_flags, icmp_type/code, length, ttl), expiry (some rules
already expired) and up to MAX_RATE_LIMITS rate limits with limits no test reaches; the frames draw TCP flags,
source ports, ICMP types and codes, TTLs and IP lengths at the rules' edges."""

import ipaddress
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_compile, _fw_model, _layout
from tests.helpers import reference

from .frames import GRE, ICMP_, ICMPV6_, IPV6_HEADER, TCP_, UDP_, FrameSpec, frames_for, mapped

HOSTS = ["198.18.0.1", "198.18.0.2", "198.18.1.1", "198.18.1.200", "198.19.0.1", "198.19.255.254"]
EDGE_PORTS = [1, 21, 22, 23, 79, 80, 81, 443, 1024, 65535]
EDGE_SOURCE_PORTS = [0, 1, 53, 123, 1023, 1024, 1025, 40000, 65535]
EDGE_LENGTHS = [0, 20, 40, 48, 60, 64, 76, 100, 512, 513, 1280, 1500, 65535]  # frames carry 28 to 150 bytes of IP
EDGE_TTLS = [0, 1, 2, 63, 64, 65, 128, 254, 255]
ICMP_TYPES = {ICMP_: [0, 8, 255], ICMPV6_: [1, 128, 255]}
ICMP_CODES = [0, 3]
TCP_FLAG_BYTES = [0x02, 0x12, 0x10, 0x11, 0x04, 0x29, 0xC2]  # SYN, SYN-ACK, ACK, FIN-ACK, RST, XMAS, SYN-ECE-CWR
TCP_FLAG_MASKS = [(0x02, 0x10), (0x12, 0), (0x10, 0x02), (0x04, 0), (0, 0x02), (0x01, 0x04), (0x29, 0), (0xC0, 0x01)]
MAX_RATE_LIMITS = _layout.LIMITS_PER_PACKET  # what one packet may go through
FRAMES_PER_EXAMPLE = 40
NOW = int(time.time())
DAY = 86400


def near(edges, least, most):
    """Values at and next to the edges, within least..most."""
    return sorted(set(value for edge in edges for value in (edge - 1, edge, edge + 1) if least <= value <= most))


ports = st.one_of(st.sampled_from(EDGE_PORTS), st.integers(1, 65535))
# what frames carry: values at and next to the rules' edges; IP length None: what the frame carries
SOURCE_PORTS = st.sampled_from(near(EDGE_SOURCE_PORTS, 0, 65535))
TTLS = st.sampled_from(near(EDGE_TTLS, 0, 255))
IP_LENGTHS = dict((family, st.sampled_from([None] * 8 + near(EDGE_LENGTHS, least, 65535)))
                  for family, least in ((4, 0), (6, IPV6_HEADER)))
ICMP_TYPES_SENT = dict((proto, st.sampled_from(types + [42])) for proto, types in ICMP_TYPES.items())
ICMP_CODES_SENT = st.sampled_from(ICMP_CODES + [42])


@st.composite
def ranges(draw, values):
    return tuple(sorted((draw(values), draw(values))))


def sometimes(draw, strategy, chance=4):
    """A value of strategy one time in `chance`, else None."""
    return draw(strategy) if draw(st.integers(1, chance)) == 1 else None


@st.composite
def networks(draw, family):
    host = draw(st.sampled_from(HOSTS))
    if family == 6:
        return ipaddress.ip_network((mapped(host), draw(st.sampled_from([0, 64, 96, 100, 111, 112, 120, 127, 128]))),
                                    strict=False)
    return ipaddress.ip_network((host, draw(st.sampled_from([0, 8, 15, 16, 23, 24, 31, 32]))), strict=False)


@st.composite
def rate_limit_fields(draw):
    """Limits no test reaches: a second of 10 million packets or 100 gigabits at least."""
    fields = {}
    if draw(st.booleans()):
        fields["pps"] = draw(st.sampled_from([10 ** 7, 10 ** 9]))
        fields["burst"] = fields["pps"]
    if not fields or draw(st.booleans()):
        fields["bps"] = draw(st.sampled_from([10 ** 11, 10 ** 12]))
        fields["burst_bytes"] = fields["bps"] // 8
    fields["per"] = draw(st.sampled_from(["source", "rule"]))
    if fields["per"] == "source":
        fields["per_prefix"] = draw(st.sampled_from([None, 1, 24, 32]))
        fields["per_prefix6"] = draw(st.sampled_from([None, 1, 64, 128]))
    return fields


@st.composite
def rules(draw, rate_limit=False):
    """A valid Rule (parse_rule says so): a verdict, or with rate_limit a rate limit (half of them without
    addresses, so that packets go through several); one in eight has expired."""
    family = draw(st.sampled_from([4, 6]))
    source, destination = None, None
    if not (rate_limit and draw(st.booleans())):
        source = draw(st.one_of(st.none(), networks(family)))
        destination = draw(st.one_of(st.none(), networks(family)))
    icmp = ICMP_ if family == 4 else ICMPV6_
    protocol = draw(st.sampled_from([None, TCP_, TCP_, UDP_, GRE, icmp]))
    fields = {"port": None}
    if protocol in (None, TCP_, UDP_):
        fields["port"] = sometimes(draw, ranges(ports), 2)
        fields["source_port"] = sometimes(draw, ranges(st.sampled_from(EDGE_SOURCE_PORTS)))
    if protocol == TCP_:
        fields["tcp_flags"] = sometimes(draw, st.sampled_from(TCP_FLAG_MASKS), 2)
    if protocol == icmp:
        fields["icmp_type"] = sometimes(draw, st.sampled_from(ICMP_TYPES[icmp]), 2)
        if fields["icmp_type"] is not None:
            fields["icmp_code"] = sometimes(draw, st.sampled_from(ICMP_CODES), 2)
    fields["length"] = sometimes(draw, ranges(st.sampled_from(EDGE_LENGTHS)))
    fields["ttl"] = sometimes(draw, ranges(st.sampled_from(EDGE_TTLS)))
    fields["expires_at"] = draw(st.sampled_from([None] * 6 + [NOW + DAY, NOW - DAY]))
    if rate_limit:
        fields.update(draw(rate_limit_fields()))
    action = "rate_limit" if rate_limit else draw(st.sampled_from(["drop", "pass"]))
    rule = _fw_model.Rule(action, source, destination, protocol, **fields)
    # the model refuses a deadline in the past: an expired rule is one made before its deadline
    made_at = NOW if fields["expires_at"] is None else fields["expires_at"] - DAY // 2
    return _fw_model.parse_rule(rule.to_dict(), now=made_at)


@st.composite
def rule_lists(draw, verdicts=rules(), rate_limits=rules(rate_limit=True), max_size=12):
    """Up to max_size rules, up to MAX_RATE_LIMITS of them rate limits, anywhere in the list."""
    limits = draw(st.lists(rate_limits, max_size=MAX_RATE_LIMITS))
    rule_list = draw(st.lists(verdicts, max_size=max_size - len(limits)))
    for limit in limits:
        rule_list.insert(draw(st.integers(0, len(rule_list))), limit)
    return rule_list


SET_NAMES = ["blocklist", "admins"]


@st.composite
def set_rules(draw, rate_limit=False):
    """A rule that names a set by source (with or without a destination) or by destination alone."""
    rule = draw(rules(rate_limit))
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
    icmp = ICMP_ if family == 4 else ICMPV6_
    proto = draw(st.sampled_from([TCP_, UDP_, GRE, icmp]))
    fields = {}
    if proto in (TCP_, UDP_):
        fields.update(dport=draw(ports), sport=draw(SOURCE_PORTS),
                      tcp_flags=draw(st.sampled_from(TCP_FLAG_BYTES) if draw(st.booleans()) else st.integers(0, 255)))
    elif proto == icmp:
        fields.update(nd=proto == ICMPV6_ and draw(st.integers(1, 4)) == 1, icmp_type=draw(ICMP_TYPES_SENT[proto]),
                      icmp_code=draw(ICMP_CODES_SENT))
    return FrameSpec(src, dst, proto, vlans=draw(st.sampled_from([0, 0, 1, 2, 3])), qinq=draw(st.booleans()),
                     ip_options=draw(st.sampled_from([0, 0, 3, 40])) if family == 4 else 0,
                     ext=draw(st.lists(st.sampled_from(["hbh", "rt", "dst"]), max_size=3)) if family == 6 else (),
                     fragment=draw(st.sampled_from([None, None, "first", "later"])), ttl=draw(TTLS),
                     length=draw(IP_LENGTHS[family]), **fields)


CASES = dict(rule_list=rule_lists(), default_action=st.sampled_from(["drop", "pass"]),
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
@given(rule_list=rule_lists(st.one_of(rules(), set_rules()), st.one_of(rules(True), set_rules(True))),
       sets=address_sets(),
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
    """Turns the first drop or pass into the other."""
    compiled = reference.compile_rules(rule_list, default_action)
    verdicts = [position for position, rule in enumerate(rule_list) if rule.action != "rate_limit"]
    if verdicts:
        first = bytearray(compiled.rules[verdicts[0]])
        first[0] = _layout.XDP_ACTIONS["pass"] + _layout.XDP_ACTIONS["drop"] - first[0]
        compiled.rules[verdicts[0]] = bytes(first)
    return compiled


def test_a_wrong_compiler_is_caught(firewall):
    @settings(max_examples=200, phases=[Phase.generate], **SETTINGS)
    @given(**CASES)
    def with_wrong_compiler(rule_list, default_action, specs):
        program_agrees_with_reference(firewall, rule_list, default_action, specs,
                                      compiler=compiler_flipping_first_action)

    with pytest.raises(AssertionError, match="verdict"):
        with_wrong_compiler()
