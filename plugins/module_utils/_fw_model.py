# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall's rule model: a rule's validation, its canonical form (the dict the module returns
and stores), its packed xf_rule (both ways), its identity across runs and its one-line text.

Semantics are documented in docs/RULES.md; the packed layout is _layout.RULE.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import socket
from collections import namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_sets import NAME_PATTERN, check_name, set_tag
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import (
    ACTION_NAMES, DST_SET, HAS_DST, HAS_PORT, HAS_PROTO, NO_PREFIX, RULE, SRC_SET, XDP_ACTIONS)

RULE_ACTIONS = ("drop", "pass")
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
PROTOCOL_NAMES = dict((number, name) for name, number in PROTOCOLS.items())
PORT_PROTOCOLS = (PROTOCOLS["tcp"], PROTOCOLS["udp"])
RULE_KEYS = ("action", "source", "destination", "protocol", "port", "source_set", "destination_set")
MATCH_FIELDS = RULE_KEYS[1:]
ENTRY_KEYS = frozenset(("name",) + RULE_KEYS)  # the keys of a rule entry: a canonical rule and its name


class RuleError(_errors.XdpfleetError, ValueError):
    """Invalid rules; `errors` lists one message per problem, each naming its field."""

    def __init__(self, errors):
        super(RuleError, self).__init__(_errors.listed(errors))
        self.errors = list(errors)


class Rule(namedtuple("Rule", RULE_KEYS, defaults=(None, None))):  # no source_set, no destination_set
    """One validated rule: networks are ipaddress objects, port an inclusive (low, high)."""

    def to_dict(self):
        """The rule in the module's `config` shape, without unset matches."""
        result = {"action": self.action}
        for key in ("source", "destination"):
            if getattr(self, key) is not None:
                result[key] = str(getattr(self, key))
        if self.protocol is not None:
            result["protocol"] = PROTOCOL_NAMES.get(self.protocol, self.protocol)
        if self.port is not None:
            low, high = self.port
            result["port"] = low if low == high else "%d-%d" % (low, high)
        for key in ("source_set", "destination_set"):
            if getattr(self, key) is not None:
                result[key] = getattr(self, key)
        return result

    @property
    def family(self):
        """4 or 6 when an address says so, 0 for both (a set may hold both)."""
        network = self.source or self.destination
        return network.version if network else 0


def parse_rule(item, where="rule"):
    if not isinstance(item, dict):
        raise RuleError(["%s: must be a dict with an action and optional %s"
                         % (where, ", ".join(RULE_KEYS[1:]))])
    errors = ["%s.%s: unknown key (allowed: %s)" % (where, key, ", ".join(RULE_KEYS))
              for key in sorted(set(item) - set(RULE_KEYS), key=str)]
    values = {}
    for key, parser in (("action", _parse_action), ("source", _parse_network),
                        ("destination", _parse_network), ("protocol", _parse_protocol), ("port", _parse_port),
                        ("source_set", _parse_set_name), ("destination_set", _parse_set_name)):
        try:
            values[key] = parser(item.get(key))
        except ValueError as error:
            errors.append("%s.%s: %s" % (where, key, error))
    if not errors:
        errors = _consistency_errors(values, where)
    if errors:
        raise RuleError(errors)
    return Rule(**values)


def _parse_action(value):
    if value not in RULE_ACTIONS:
        raise ValueError("%r is not an action (use drop or pass)" % (value,))
    return value


def _parse_network(value):
    if value is None:
        return None
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ValueError("%r is not an IPv4/IPv6 address or CIDR (e.g. 198.18.0.0/15 or 2001:db8::/32)"
                         % (value,))
    raise ValueError("%s has host bits set (did you mean %s?)" % (value, loose))


def _parse_set_name(value):
    return None if value is None else check_name(value, "set name")


def _parse_protocol(value):
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in PROTOCOLS:
        return PROTOCOLS[value.lower()]
    number = _integer(value)
    if number is None or not 0 <= number <= 255:
        raise ValueError("%r is not a protocol (tcp, udp, icmp, icmpv6, or a number 0-255)" % (value,))
    return number


def _parse_port(value):
    if value is None:
        return None
    text = str(value).strip()
    low_text, separator, high_text = text.partition("-")
    low, high = _integer(low_text), _integer(high_text if separator else low_text)
    if low is None or high is None or not 1 <= low <= high <= 65535:
        raise ValueError("%s is not a port (1-65535, or 'low-high' with low <= high)" % (value,))
    return (low, high)


def _integer(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else None


def _consistency_errors(values, where):
    errors = []
    source, destination, protocol = values["source"], values["destination"], values["protocol"]
    if source is not None and destination is not None and source.version != destination.version:
        errors.append("%s: source %s and destination %s are different address families (split the rule)"
                      % (where, source, destination))
    if values["port"] is not None and protocol not in (None,) + PORT_PROTOCOLS:
        errors.append("%s.port: ports need protocol tcp or udp (or no protocol), not %s"
                      % (where, PROTOCOL_NAMES.get(protocol, protocol)))
    errors += _set_errors(values, where)
    family = (source or destination).version if (source or destination) else None
    if (family, protocol) in ((6, PROTOCOLS["icmp"]), (4, PROTOCOLS["icmpv6"])):
        errors.append("%s.protocol: %s with IPv%d addresses never matches (use %s)"
                      % (where, PROTOCOL_NAMES[protocol], family, "icmpv6" if family == 6 else "icmp"))
    return errors


def _set_errors(values, where):
    errors = []
    for side in ("source", "destination"):
        if values[side] is not None and values[side + "_set"] is not None:
            errors.append("%s: %s and %s_set both given (a rule matches one or the other: use two rules)"
                          % (where, side, side))
    if values["destination_set"] is not None and (values["source"] or values["source_set"]) is not None:
        errors.append("%s.destination_set: a rule with a source is looked up by its source, so it cannot match a "
                      "destination set too (use source_set with destination, or destination_set without a source)"
                      % where)
    return errors


# --- canonical values, packed without ipaddress objects ---------------------------------
# 100,000 rules are too many to build ipaddress objects for on every run: values already in the
# canonical form of Rule.to_dict (IPv4) are packed directly; anything else goes through parse_rule.

FULL_MASK4 = 0xFFFFFFFF
NO_MORE = (0,) * 13 + (b"",) + (0,) * 5  # the second half of an xf_rule without its conditions or rate limit


def pack_canonical(values):
    """The packed xf_rule (counter 0) of (action, source, destination, protocol, port, source_set,
    destination_set) when they are exactly Rule.to_dict's form of a valid rule with IPv4 or no addresses; else
    None."""
    action, source, destination, protocol, port, source_set, destination_set = values
    src, dst = _canonical_ipv4(source), _canonical_ipv4(destination)
    number, ports = _canonical_protocol(protocol), _canonical_port(port)
    if action not in RULE_ACTIONS or (source is not None and src is None) or \
            (destination is not None and dst is None) or (protocol is not None and number is None) or \
            (port is not None and (ports is None or number not in (None,) + PORT_PROTOCOLS)) or \
            (number == PROTOCOLS["icmpv6"] and (src or dst)) or \
            not _canonical_sets(source_set, destination_set, source, destination):
        return None
    flags = (HAS_PROTO if number is not None else 0) | (HAS_PORT if ports else 0) | (HAS_DST if dst else 0) | \
        (SRC_SET if source_set else 0) | (DST_SET if destination_set else 0)
    (src_len, src_bytes), (dst_len, dst_bytes) = src or (NO_PREFIX, b""), dst or (NO_PREFIX, b"")
    mask = (FULL_MASK4 ^ (FULL_MASK4 >> dst_len)).to_bytes(4, "big") if dst else b""
    low, high = ports or (0, 0)
    return RULE.format.pack(XDP_ACTIONS[action], flags, number or 0, 4 if (src or dst) else 0, src_len, dst_len,
                            0, low, high, 0, set_tag(source_set) if source_set else src_bytes,
                            set_tag(destination_set) if destination_set else dst_bytes, mask, *NO_MORE)


def _canonical_sets(source_set, destination_set, source, destination):
    """True when the set names are valid and combine with the addresses as parse_rule allows (None: no set)."""
    for name in (source_set, destination_set):
        if name is not None and not (isinstance(name, str) and NAME_PATTERN.match(name)):
            return False
    if source_set is not None and source is not None:
        return False
    return destination_set is None or (source is None and source_set is None and destination is None)


def _canonical_int(text):
    """int of a decimal without sign, spaces or leading zeros, else None."""
    if not text.isascii() or not text.isdigit() or (text[0] == "0" and len(text) > 1):
        return None
    return int(text)


PREFIX_LENGTHS4 = dict((str(length), length) for length in range(33))


def _canonical_ipv4(value):
    """(prefix length, packed address) of an IPv4 CIDR in ipaddress' string form without host bits, or None."""
    if not isinstance(value, str):
        return None
    address, length_text = value.partition("/")[::2]
    length = PREFIX_LENGTHS4.get(length_text)
    try:
        packed = socket.inet_pton(socket.AF_INET, address)
    except (OSError, ValueError):
        return None
    # the text must be exactly how ipaddress writes it (inet_pton is laxer on some libcs)
    if length is None or "%d.%d.%d.%d" % tuple(packed) != address or \
            int.from_bytes(packed, "big") & (FULL_MASK4 >> length):
        return None
    return length, packed


def _canonical_protocol(value):
    if isinstance(value, str):
        return PROTOCOLS.get(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255 and value not in PROTOCOL_NAMES:
        return value
    return None


def _canonical_port(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value) if 1 <= value <= 65535 else None
    if not isinstance(value, str):
        return None
    low_text, high_text = value.partition("-")[::2]
    low, high = _canonical_int(low_text), _canonical_int(high_text)
    return (low, high) if low is not None and high is not None and 1 <= low < high <= 65535 else None


def canonical_of_packed(packed, set_names=None):
    """Rule.to_dict of a packed xf_rule, without ipaddress objects for IPv4; set_names: {tag: name} (a set
    whose name is not there is shown by its tag)."""
    rule = RULE.unpack(packed)
    result = {"action": ACTION_NAMES[rule.action]}
    for key, length, raw in (("source", rule.src_len, rule.src), ("destination", rule.dst_len, rule.dst)):
        if length != NO_PREFIX:
            result[key] = _network_text(rule.family, raw, length)
    if rule.flags & HAS_PROTO:
        result["protocol"] = PROTOCOL_NAMES.get(rule.proto, rule.proto)
    if rule.flags & HAS_PORT:
        result["port"] = rule.port_lo if rule.port_lo == rule.port_hi else "%d-%d" % (rule.port_lo, rule.port_hi)
    result.update(_set_names(rule, set_names or {}))
    return result


def _set_names(rule, set_names):
    """{source_set / destination_set: name} of an unpacked xf_rule."""
    names = {}
    for key, flag, tag in (("source_set", SRC_SET, rule.src), ("destination_set", DST_SET, rule.dst)):
        if rule.flags & flag:
            names[key] = set_names.get(tag) or "tag-" + tag.hex()
    return names


def _network_text(family, raw, length):
    if family == 4:
        return "%d.%d.%d.%d/%d" % (raw[0], raw[1], raw[2], raw[3], length)
    return str(ipaddress.IPv6Network((int.from_bytes(raw, "big"), length)))


def _network(family, packed, prefixlen):
    if prefixlen == NO_PREFIX:
        return None
    if family == 4:
        return ipaddress.IPv4Network((int.from_bytes(packed[:4], "big"), prefixlen))
    return ipaddress.IPv6Network((int.from_bytes(packed, "big"), prefixlen))


def decode_rule(packed, set_names=None):
    """(Rule, counter) of a packed xf_rule: the inverse of pack_rule (set_names as for canonical_of_packed)."""
    rule = RULE.unpack(packed)
    names = _set_names(rule, set_names or {})
    decoded = Rule(ACTION_NAMES[rule.action], _network(rule.family, rule.src, rule.src_len),
                   _network(rule.family, rule.dst, rule.dst_len), rule.proto if rule.flags & HAS_PROTO else None,
                   (rule.port_lo, rule.port_hi) if rule.flags & HAS_PORT else None,
                   names.get("source_set"), names.get("destination_set"))
    return decoded, rule.counter


def pack_rule(rule, counter=0):
    """The packed xf_rule of a Rule."""
    flags = ((HAS_PROTO if rule.protocol is not None else 0) | (HAS_PORT if rule.port else 0)
             | (HAS_DST if rule.destination is not None else 0) | (SRC_SET if rule.source_set else 0)
             | (DST_SET if rule.destination_set else 0))
    low, high = rule.port or (0, 0)
    source, destination = rule.source, rule.destination
    return RULE.format.pack(
        XDP_ACTIONS[rule.action], flags, rule.protocol or 0, rule.family,
        source.prefixlen if source else NO_PREFIX, destination.prefixlen if destination else NO_PREFIX, 0,
        low, high, counter, set_tag(rule.source_set) if rule.source_set else _address_bytes(source),
        set_tag(rule.destination_set) if rule.destination_set else _address_bytes(destination),
        destination.netmask.packed if destination else b"", *NO_MORE)


def _address_bytes(network):
    return network.network_address.packed if network is not None else b""


# --- identity and text --------------------------------------------------------------------------


def rule_key(rule):
    """A rule entry's identity across runs: its name when it has one, else its match fields."""
    get = rule.get
    name = get("name")
    if name:
        return ("name", name)
    return ("match",) + tuple(map(get, MATCH_FIELDS))


def describe_key(key):
    if key[0] == "name":
        return "name %r" % key[1]
    return "match %s" % match_text(dict(zip(MATCH_FIELDS, key[1:])))


def match_text(rule):
    words = [rule.get("protocol") or "ip", "from", _side_text(rule, "source"), "to", _side_text(rule, "destination")]
    if rule.get("port") is not None:
        words += ["port", str(rule["port"])]
    return " ".join(words)


def _side_text(rule, side):
    if rule.get(side + "_set"):
        return "set " + rule[side + "_set"]
    return rule.get(side) or "any"


def rule_line(rule):
    """One line per rule entry, as diff mode shows it: `drop tcp from any to 198.18.0.0/24 port 22 (ssh)`."""
    text = "%s %s" % (rule["action"], match_text(rule))
    if rule.get("name"):
        text += " (%s)" % rule["name"]
    return text
