"""What only the tests need of the firewall: the reference classifier (the verdict the program must give a
packet), rule lists compiled in one call, and the program's counters read back."""

import ipaddress
from collections import namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_compile import compile_packed
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_sets import by_tag, parse_entries
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_kernel import PerCpuRecords, action_stats
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import RuleError, pack_rule, parse_rule
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import REASONS

Verdict = namedtuple("Verdict", "action position reason")


class Packet(namedtuple("Packet", "kind family src dst proto dport")):
    """What the program sees of a frame.

    kind: 'ip', 'arp', 'nd' (IPv6 neighbour discovery), 'not_ip' (other ethertypes,
    more than 2 VLAN tags) or 'malformed'; for 'ip': family, src and dst (ipaddress
    objects), proto, and dport (None unless a TCP/UDP header is there).
    """

    @classmethod
    def ip(cls, src, dst, proto, dport=None):
        src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        return cls("ip", src.version, src, dst, proto, dport)

    @classmethod
    def special(cls, kind):
        return cls(kind, None, None, None, None, None)


def _contains(network, address):
    return network is None or (network.version == address.version and address in network)


def _in_set(sets, name, address):
    """True without a set (name None), else when a network of the named set holds the address."""
    return name is None or any(network.version == address.version and address in network for network in sets[name])


def rule_matches(rule, packet, sets=None):
    """sets: {name: [ipaddress networks]} of the sets rules name."""
    return (_contains(rule.source, packet.src) and _contains(rule.destination, packet.dst)
            and _in_set(sets, rule.source_set, packet.src) and _in_set(sets, rule.destination_set, packet.dst)
            and rule.protocol in (None, packet.proto)
            and (rule.port is None or (packet.dport is not None and rule.port[0] <= packet.dport <= rule.port[1])))


def classify(rules, default_action, packet, sets=None):
    """The verdict the program must give: Verdict(action, rule number or None, reason).

    reason: 'rule', 'default', 'always_pass' (ARP, ND) or 'malformed'. sets: as for rule_matches.
    """
    if packet.kind in ("arp", "nd"):
        return Verdict("pass", None, "always_pass")
    if packet.kind == "malformed":
        return Verdict("drop", None, "malformed")
    if packet.kind == "ip":
        for number, rule in enumerate(rules):
            if rule_matches(rule, packet, sets):
                return Verdict(rule.action, number, "rule")
    return Verdict(default_action, None, "default")


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


def read_hits(maps, counters):
    """[{packets, bytes}] per hit-counter slot, in the order given."""
    records = PerCpuRecords(maps["xf_hits"], max(counters) + 1 if counters else 0)
    return [dict(zip(("packets", "bytes"), records.summed(counter))) for counter in counters]
