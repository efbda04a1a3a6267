"""Named cases of the issue 19 matches (source_port, tcp_flags, icmp_type/code, length, ttl), rate limits and
expiry: the edges a random rule set rarely lands on, each checked against the reference like test_firewall."""

import time

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel, _fw_slots, _layout, _libbpf
from tests.helpers import reference
from tests.helpers.reference import Packet, parse_rules

from .frames import ICMP_, ICMPV6_, TCP_, UDP_, FrameSpec, build, frames_for, mapped
from .test_firewall import assert_agrees

A, C = "198.18.1.7", "198.19.0.1"
A6, C6 = mapped(A), mapped(C)
FIN, SYN, RST, ACK, ECE, CWR = 0x01, 0x02, 0x04, 0x10, 0x40, 0x80


def both_families(specs):
    """Each spec as it is (IPv4) and with the addresses' IPv6 forms."""
    return [spec for ipv4 in specs for spec in (ipv4, ipv4._replace(src=mapped(ipv4.src), dst=mapped(ipv4.dst)))]


def test_syn_without_ack_is_not_a_syn_ack(firewall):
    config = [{"action": "drop", "protocol": "tcp", "tcp_flags": "syn,!ack"},
              {"action": "pass", "protocol": "tcp", "tcp_flags": "!syn,ack,fin"},
              {"action": "drop", "protocol": "tcp", "port": 443}]
    flags = (SYN, SYN | ACK, ACK, SYN | ECE | CWR, SYN | FIN, FIN | ACK, 0, 0xFF)
    specs = both_families([FrameSpec(A, C, TCP_, port, tcp_flags=value) for value in flags for port in (80, 443)])
    frames = frames_for(specs)
    assert_agrees(firewall, config, "pass", frames)
    dropped_by_the_first = [packet.tcp_flags for frame, packet in frames
                            if firewall.run(frame) == _layout.XDP_ACTIONS["drop"] and packet.dport == 80]
    assert sorted(set(dropped_by_the_first)) == [SYN, SYN | FIN, SYN | ECE | CWR]


@pytest.mark.parametrize("fragment", [None, "first", "later"])
def test_header_matches_never_match_a_non_first_fragment(firewall, fragment):
    """source_port, tcp_flags and icmp_type need the L4 header, which a non-first fragment lacks (the rules
    take in the zeros the program holds for what it does not see); length and ttl do not."""
    config = [{"action": "drop", "protocol": "tcp", "source_port": 40000},
              {"action": "drop", "source_port": "0-2000"},
              {"action": "drop", "protocol": "tcp", "tcp_flags": "!syn"},
              {"action": "drop", "protocol": "icmp", "icmp_type": 0},
              {"action": "drop", "protocol": "icmpv6", "icmp_type": 0, "icmp_code": 0},
              {"action": "pass", "ttl": "0-9"},
              {"action": "drop", "length": "0-60"}]
    specs = both_families([FrameSpec(A, C, TCP_, 80, sport=40000, fragment=fragment),
                           FrameSpec(A, C, UDP_, 53, sport=1500, fragment=fragment),
                           FrameSpec(A, C, TCP_, 80, sport=3000, tcp_flags=RST, fragment=fragment),
                           FrameSpec(A, C, TCP_, 80, sport=3000, ttl=9, fragment=fragment),
                           FrameSpec(A, C, UDP_, 53, sport=3000, length=60, fragment=fragment)])
    specs += [FrameSpec(A, C, ICMP_, icmp_type=0, fragment=fragment),
              FrameSpec(A6, C6, ICMPV6_, icmp_type=0, fragment=fragment)]
    assert_agrees(firewall, config, "pass", frames_for(specs))


@pytest.mark.parametrize("spec", [FrameSpec(A, C, ICMP_, icmp_type=3, icmp_code=4),
                                  FrameSpec(A6, C6, ICMPV6_, ext=("hbh",), icmp_type=1, icmp_code=4)],
                         ids=["icmp", "icmpv6"])
def test_an_icmp_match_on_a_truncated_icmp_header_is_malformed(firewall, spec):
    """Cut inside the 4 bytes of type, code and checksum, the frame is malformed whatever the rules say."""
    frame, required = build(spec)
    protocol = "icmp" if spec.proto == ICMP_ else "icmpv6"
    config = [{"action": "pass", "protocol": protocol, "icmp_type": spec.icmp_type, "icmp_code": spec.icmp_code}]
    frames = [(frame[:length], Packet.special("malformed")) for length in range(required - 4, required)]
    assert_agrees(firewall, config, "drop", frames + frames_for([spec, spec._replace(icmp_code=5)]))


@pytest.mark.parametrize("family", [4, 6])
def test_length_and_ttl_at_both_edges_of_their_ranges(firewall, family):
    """IPv6 lengths count the 40-byte header and the extension headers; the widest ranges take 0 and 255 (TTL)
    and 65535 (length) in."""
    config = [{"action": "drop", "length": "100-200", "ttl": "10-20"},
              {"action": "pass", "length": "100-200"},
              {"action": "drop", "ttl": 255},
              {"action": "drop", "ttl": 0},
              {"action": "drop", "length": "1400-65535", "ttl": "10-254"}]
    ext = ("hbh", "dst") if family == 6 else ()
    src, dst = (A, C) if family == 4 else (A6, C6)
    specs = [FrameSpec(src, dst, UDP_, 53, ext=ext, length=length, ttl=ttl)
             for length in (99, 100, 101, 199, 200, 201, 1399, 1400, 65535) for ttl in (9, 10, 20, 21)]
    specs += [FrameSpec(src, dst, UDP_, 53, ext=ext, ttl=ttl) for ttl in (0, 1, 29, 30, 254, 255)]
    assert_agrees(firewall, config, "pass", frames_for(specs))


def test_an_ipv6_length_beyond_65535_matches_no_length_range(firewall):
    config = [{"action": "drop", "length": "0-100"}]
    specs = [FrameSpec(A6, C6, UDP_, 53, length=length) for length in (65535, 65536, 65575)]
    assert_agrees(firewall, config, "pass", frames_for(specs))


SSH_FROM_HIGH_PORTS = {"action": "pass", "protocol": "tcp", "port": 22, "source_port": "1024-65535"}
SSH = {"action": "drop", "protocol": "tcp", "port": 22}


@pytest.mark.parametrize("config", [[SSH_FROM_HIGH_PORTS, SSH], [SSH, SSH_FROM_HIGH_PORTS]],
                         ids=["conditional-first", "conditional-shadowed"])
def test_a_general_rule_with_conditions_before_and_after_a_plain_one_of_its_port(firewall, config):
    """The conditional rule is in xf_cond_N, the plain one in the port index: the earlier of the two wins."""
    specs = both_families([FrameSpec(A, C, TCP_, port, sport=sport)
                           for port in (22, 23) for sport in (0, 1023, 1024, 40000, 65535)])
    assert_agrees(firewall, config, "pass", frames_for(specs))


def test_as_many_conditional_general_rules_as_the_program_checks(firewall):
    config = [{"action": "pass" if ttl % 2 else "drop", "ttl": ttl} for ttl in range(_layout.CHAIN_MAX)]
    config[-1].update(protocol="udp", port=53)
    specs = both_families([FrameSpec(A, C, proto, 53, ttl=ttl) for proto in (TCP_, UDP_)
                           for ttl in range(_layout.CHAIN_MAX + 2)])
    assert_agrees(firewall, config, "pass", frames_for(specs))


def set_wall_clock(firewall, wall_seconds):
    """Writes xf_clock so that the program's wall clock reads wall_seconds now."""
    offset = int(wall_seconds * 10 ** 9) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    _libbpf.map_update(firewall.maps["xf_clock"], _layout.U32.pack(_layout.CLOCK_WALL_MINUS_BOOT),
                       _layout.U64.pack(offset))


def test_a_rule_stops_matching_when_the_clock_passes_its_deadline(firewall):
    now = int(time.time())
    deadline = now + 3600
    rules = parse_rules([{"action": "drop", "protocol": "udp", "expires_at": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline))}, {"action": "drop", "port": 53}])
    frames = frames_for(both_families([FrameSpec(A, C, UDP_, port) for port in (53, 54)]))
    firewall.apply(rules, "pass")
    try:
        for wall in (now, deadline - 1, deadline + 1, deadline + 86400):
            set_wall_clock(firewall, wall)
            assert firewall.check(frames, now=wall) == [], "at deadline %+d s" % (wall - deadline)
    finally:
        _fw_slots.set_clock(firewall.maps)


def limit(**fields):
    return dict({"action": "rate_limit", "pps": 10 ** 7, "burst": 10 ** 7}, **fields)


def test_a_packet_goes_through_two_rate_limits_to_the_rule_after_them(firewall):
    """One by the source's host table, one general: each counts the packet as passed, and the next match
    decides."""
    config = [limit(source=A, per="rule"), {"action": "pass", "source": A, "protocol": "udp"},
              limit(protocol="tcp", per_prefix=24, bps=10 ** 12), {"action": "drop", "protocol": "tcp", "port": 22}]
    specs = both_families([FrameSpec(src, dst, proto, port) for src in (A, "198.18.5.5")
                           for dst in (C, "198.19.9.9") for proto in (TCP_, UDP_) for port in (22, 23)])
    assert_agrees(firewall, config, "pass", frames_for(specs))


def test_over_its_limit_a_packet_is_dropped_and_counted_as_the_rate_limits_hit(firewall):
    """The reference takes every packet to be within a limit, so this one is checked by hand: one packet a
    second, a burst of one, for each /24 of sources."""
    rules = parse_rules([{"action": "rate_limit", "protocol": "udp", "pps": 1, "burst": 1, "per_prefix": 24},
                         {"action": "drop", "port": 53}])
    firewall.apply(rules, "pass")
    firewall.events.consume()
    first, same_prefix, other_prefix = (build(FrameSpec(source, C, UDP_, 54))[0]
                                        for source in (A, "198.18.1.8", "198.18.2.7"))
    verdicts = [_layout.ACTION_NAMES[firewall.run(frame)] for frame in (first, same_prefix, first, other_prefix)]
    assert verdicts == ["pass", "drop", "drop", "pass"]
    hits, passed = (reference.read_hits(firewall.maps, firewall.counters, name) for name in ("xf_hits", "xf_passed"))
    assert [hit["packets"] for hit in hits] == [2, 0]
    assert [count["packets"] for count in passed] == [2, 0]
    events = [_fw_kernel.decode_event(raw) for raw in firewall.events.consume()]
    assert [(event["position"], event["counter"], event["src"]) for event in events] == [
        (0, firewall.counters[0], "198.18.1.8"), (0, firewall.counters[0], A)]
