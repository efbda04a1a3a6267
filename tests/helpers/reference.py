"""What only the tests need of the firewall: the reference classifier (the verdict the program must give a
packet), rule lists compiled in one call, and the program's counters read back."""

import ipaddress
import time
from collections import namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_compile import compile_packed
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_sets import by_tag, parse_entries
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_kernel import PerCpuRecords, action_stats
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import RuleError, pack_rule, parse_rule
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import REASONS

Verdict = namedtuple("Verdict", "action position reason")


class Packet(namedtuple("Packet", "kind family src dst proto dport sport tcp_flags icmp_type icmp_code length ttl")):
    """What the program sees of a frame.

    kind: 'ip', 'arp', 'nd' (IPv6 neighbour discovery), 'not_ip' (other ethertypes,
    more than 2 VLAN tags) or 'malformed'; for 'ip': family, src and dst (ipaddress
    objects), proto; dport and sport (None unless a TCP/UDP header is there), tcp_flags (byte 13
    of a TCP header, None without one), icmp_type and icmp_code (None unless an ICMP/ICMPv6
    header is there); length (IPv4 total length, IPv6 payload length + 40) and ttl (IPv4 TTL,
    IPv6 hop limit), None when a test leaves them out (no length or ttl rule matches then).
    """

    @classmethod
    def ip(cls, src, dst, proto, dport=None, sport=None, tcp_flags=None, icmp_type=None, icmp_code=None,
           length=None, ttl=None):
        src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        return cls("ip", src.version, src, dst, proto, dport, sport, tcp_flags, icmp_type, icmp_code, length, ttl)

    @classmethod
    def special(cls, kind):
        return cls(kind, *(None,) * (len(cls._fields) - 1))


def _contains(network, address):
    return network is None or (network.version == address.version and address in network)


def _in_set(sets, name, address):
    """True without a set (name None), else when a network of the named set holds the address."""
    return name is None or any(network.version == address.version and address in network for network in sets[name])


def _in_range(bounds, value):
    """True without bounds, else when the packet has the value and it is within them (inclusive)."""
    return bounds is None or (value is not None and bounds[0] <= value <= bounds[1])


def _flags_match(masks, flags):
    return masks is None or (flags is not None and flags & (masks[0] | masks[1]) == masks[0])


def rule_matches(rule, packet, sets=None, now=None):
    """sets: {name: [ipaddress networks]} of the sets rules name; now: the wall clock in epoch seconds (default
    the clock), by which a rule with expires_at has expired."""
    return (_contains(rule.source, packet.src) and _contains(rule.destination, packet.dst)
            and _in_set(sets, rule.source_set, packet.src) and _in_set(sets, rule.destination_set, packet.dst)
            and rule.protocol in (None, packet.proto)
            and _in_range(rule.port, packet.dport) and _in_range(rule.source_port, packet.sport)
            and _flags_match(rule.tcp_flags, packet.tcp_flags)
            and rule.icmp_type in (None, packet.icmp_type) and rule.icmp_code in (None, packet.icmp_code)
            and _in_range(rule.length, packet.length) and _in_range(rule.ttl, packet.ttl)
            and (rule.expires_at is None or (time.time() if now is None else now) < rule.expires_at))


def classify(rules, default_action, packet, sets=None, now=None):
    """The verdict the program must give: Verdict(action, rule number or None, reason).

    reason: 'rule', 'default', 'always_pass' (ARP, ND) or 'malformed'. sets and now: as for rule_matches.
    A rate_limit rule gives no verdict here: the reference takes every packet to be within every limit (the
    tests give rate limits that no test can reach), so the packet goes on to the rules after it.
    """
    if packet.kind in ("arp", "nd"):
        return Verdict("pass", None, "always_pass")
    if packet.kind == "malformed":
        return Verdict("drop", None, "malformed")
    if packet.kind == "ip":
        for number, rule in enumerate(rules):
            if rule.action != "rate_limit" and rule_matches(rule, packet, sets, now):
                return Verdict(rule.action, number, "rule")
    return Verdict(default_action, None, "default")


def limits_passed(rules, verdict, packet, sets=None, now=None):
    """The numbers of the rate_limit rules a packet with this verdict (of classify) goes through: those it
    matches before its verdict's rule, each counting the packet as passed."""
    if packet.kind != "ip":
        return []
    end = len(rules) if verdict.position is None else verdict.position
    return [number for number, rule in enumerate(rules[:end])
            if rule.action == "rate_limit" and rule_matches(rule, packet, sets, now)]


def stats_reason(verdict):
    """The xf_stats index a verdict is counted under."""
    return REASONS.index("malformed" if verdict.reason == "malformed" else verdict.action)


def parse_rules(items, field="config"):
    """Validated Rules of a list of rule dicts; raises RuleError listing every problem."""
    rules, errors = [], []
    for index, item in enumerate(items):
        try:
            rules.append(parse_rule(item, "%s[%d]" % (field, index)))
        except RuleError as error:
            errors.extend(error.errors)
    if errors:
        raise RuleError(errors)
    return rules


def compile_rules(rules, default_action, counters=None, sets=None):
    """The map entries of one rule set (Rules; sets as for rule_matches), as _fw_compile.compile_packed gives
    them."""
    return compile_packed([pack_rule(rule) for rule in rules], default_action, counters, sets=sets_by_tag(sets))


def sets_by_tag(sets):
    """The sets of rule_matches as compile_packed takes them: {tag: AddressSet}."""
    return by_tag(dict((name, parse_entries([str(network) for network in networks], name))
                       for name, networks in (sets or {}).items()))


def map_fds(bpf_object):
    """{map name: fd} of a loaded BpfObject's firewall maps."""
    return dict((bpf_map.name, bpf_map.fd) for bpf_map in bpf_object.maps if bpf_map.name.startswith("xf_"))


def read_stats(maps):
    """{reason: {packets, bytes}} of xf_stats, summed over every possible CPU."""
    return action_stats(maps["xf_stats"])


def read_hits(maps, counters, name="xf_hits"):
    """[{packets, bytes}] per hit-counter slot, in the order given; name: xf_passed for what rate limits let
    through."""
    records = PerCpuRecords(maps[name], max(counters) + 1 if counters else 0)
    return [dict(zip(("packets", "bytes"), records.summed(counter))) for counter in counters]
