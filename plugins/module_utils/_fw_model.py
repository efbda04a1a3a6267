# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall's rule model: a rule's validation, its canonical form (the dict the module returns
and stores), its packed xf_rule (both ways), its identity across runs and its one-line text.

Semantics are documented in docs/RULES.md; the packed layout is _layout.RULE.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import datetime
import ipaddress
import re
import socket
import struct
import time
from collections import namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_sets import NAME_PATTERN, check_name, set_tag
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import (
    COST_SHIFT, DST_SET, HAS_DST, HAS_PORT, HAS_PROTO, MORE_EXPIRES, MORE_ICMP_CODE, MORE_ICMP_TYPE, MORE_LENGTH,
    MORE_SPORT, MORE_TCP_FLAGS, MORE_TTL, NO_PREFIX, PER_RULE, PER_SOURCE, RATE_LIMIT, RULE, SRC_SET, XDP_ACTIONS)

RULE_ACTIONS = ("drop", "pass", "rate_limit")
ACTION_CODES = {"drop": XDP_ACTIONS["drop"], "pass": XDP_ACTIONS["pass"], "rate_limit": RATE_LIMIT}
ACTION_NAMES = dict((code, name) for name, code in ACTION_CODES.items())
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
PROTOCOL_NAMES = dict((number, name) for name, number in PROTOCOLS.items())
PORT_PROTOCOLS = (PROTOCOLS["tcp"], PROTOCOLS["udp"])
ICMP_PROTOCOLS = (PROTOCOLS["icmp"], PROTOCOLS["icmpv6"])
NEIGHBOUR_DISCOVERY = range(133, 138)  # ICMPv6 types that always pass (docs/RULES.md)
TCP_FLAGS = ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr")  # bit order of TCP header byte 13
PLAIN_KEYS = ("action", "source", "destination", "protocol", "port", "source_set", "destination_set")
MORE_MATCHES = ("source_port", "tcp_flags", "icmp_type", "icmp_code", "length", "ttl")
RATE_KEYS = ("pps", "bps", "burst", "burst_bytes", "per", "per_prefix", "per_prefix6")
EXPIRY_KEYS = ("expires_at", "expires_after")
RULE_KEYS = PLAIN_KEYS + MORE_MATCHES + RATE_KEYS + EXPIRY_KEYS
MATCH_FIELDS = PLAIN_KEYS[1:] + MORE_MATCHES
ENTRY_KEYS = frozenset(("name",) + RULE_KEYS)  # the keys of a rule entry: a canonical rule and its name
NOT_PLAIN = (None,) * (len(RULE_KEYS) - len(PLAIN_KEYS))  # the values of a rule without the keys beyond PLAIN_KEYS

# Rate limits (docs/RULES.md): costs in ns << COST_SHIFT per packet and per bit of the Ethernet frame
NS = 10 ** 9
PACKET_SCALE, BIT_SCALE = NS, 8 * NS
MAX_PPS, MAX_BPS = 10 ** 9, 10 ** 12
MAX_BURST_SECONDS = 3600
FRAME_BYTES = 1514  # burst_bytes: at least one full Ethernet frame
EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
LATEST_DEADLINE = (2 ** 64 - 1) // NS  # xf_rule.expires is u64 ns since the epoch
RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:([Zz])|([+-])(\d\d):(\d\d))\Z")
# Packet and byte costs round, so large rates share a cost: xf_rule.reserved keeps the low bits of the rate
# parameters that a cost or a burst leaves ambiguous (the data plane ignores it), so that a packed rule decodes
# back to its canonical form. pps: 16 bits; bps: 32 bits; burst_bytes: 8 bits.
RESIDUES = struct.Struct("<HIB")
PPS_RESIDUE, BPS_RESIDUE, BURST_BYTES_RESIDUE = 1 << 16, 1 << 32, 1 << 8


class RuleError(_errors.XdpfleetError, ValueError):
    """Invalid rules; `errors` lists one message per problem, each naming its field."""

    def __init__(self, errors):
        super(RuleError, self).__init__(_errors.listed(errors))
        self.errors = list(errors)


class Rule(namedtuple("Rule", RULE_KEYS, defaults=(None,) * (len(RULE_KEYS) - 5))):
    """One validated rule: networks are ipaddress objects; port, source_port, length and ttl inclusive (low, high);
    tcp_flags (set mask, clear mask) of TCP header byte 13; expires_at epoch seconds (see the spec in
    docs/RULES.md for the others)."""

    def to_dict(self):
        """The rule in the module's `config` shape, without unset matches."""
        result = {"action": self.action}
        for key in ("source", "destination"):
            if getattr(self, key) is not None:
                result[key] = str(getattr(self, key))
        if self.protocol is not None:
            result["protocol"] = PROTOCOL_NAMES.get(self.protocol, self.protocol)
        if self.port is not None:
            result["port"] = _range_text(self.port)
        for key in ("source_set", "destination_set"):
            if getattr(self, key) is not None:
                result[key] = getattr(self, key)
        result.update(_canonical_more(self._asdict()))
        return result

    @property
    def family(self):
        """4 or 6 when an address says so, 0 for both (a set may hold both)."""
        network = self.source or self.destination
        return network.version if network else 0


def _range_text(bounds):
    low, high = bounds
    return low if low == high else "%d-%d" % (low, high)


def _canonical_more(values):
    """The canonical {key: value} of the keys beyond PLAIN_KEYS of Rule-form values (a dict)."""
    result = {}
    for key in ("source_port", "length", "ttl"):
        if values[key] is not None:
            result[key] = _range_text(values[key])
    if values["tcp_flags"] is not None:
        result["tcp_flags"] = tcp_flags_text(*values["tcp_flags"])
    for key in ("icmp_type", "icmp_code") + RATE_KEYS + ("expires_after",):
        if values[key] is not None:
            result[key] = values[key]
    if values["expires_at"] is not None:
        result["expires_at"] = time.strftime(EXPIRES_FORMAT, time.gmtime(values["expires_at"]))
    return result


def tcp_flags_text(set_mask, clear_mask):
    return ",".join(("" if set_mask & bit else "!") + name for bit, name in
                    ((1 << index, name) for index, name in enumerate(TCP_FLAGS)) if (set_mask | clear_mask) & bit)


def parse_rule(item, where="rule", now=None):
    """The Rule of a config item (without name); now (epoch seconds, default the clock) for expires_at."""
    if not isinstance(item, dict):
        raise RuleError(["%s: must be a dict with an action and optional %s"
                         % (where, ", ".join(RULE_KEYS[1:]))])
    errors = ["%s.%s: unknown key (allowed: %s)" % (where, key, ", ".join(RULE_KEYS))
              for key in sorted(set(item) - set(RULE_KEYS), key=str)]
    values, failed = {}, set()
    for key, parser in FIELD_PARSERS:
        try:
            values[key] = parser(item.get(key))
        except ValueError as error:
            errors.append("%s.%s: %s" % (where, key, error))
            values[key] = None
            failed.add(key)
    errors += _consistency_errors(values, failed, where, time.time() if now is None else now)
    if errors:
        raise RuleError(errors)
    _fill_rate_defaults(values)
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
    return _parse_range(value, 1, 65535, "a port")


def _parse_range(value, least, most, what):
    """(low, high) of N or "low-high" within least..most."""
    if value is None:
        return None
    text = str(value).strip()
    low_text, separator, high_text = text.partition("-")
    low, high = _integer(low_text), _integer(high_text if separator else low_text)
    if low is None or high is None or not least <= low <= high <= most:
        raise ValueError("%s is not %s (%d-%d, or 'low-high' with low <= high)" % (value, what, least, most))
    return (low, high)


def _parse_source_port(value):
    return _parse_range(value, 0, 65535, "a source port")


def _parse_length(value):
    return _parse_range(value, 0, 65535, "an IP total length")


def _parse_ttl(value):
    return _parse_range(value, 0, 255, "a TTL")


def _parse_tcp_flags(value):
    if value is None:
        return None
    usage = "(comma-separated %s; !name: must be clear, e.g. syn,!ack)" % ", ".join(TCP_FLAGS)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("%r is not a list of TCP flags %s" % (value, usage))
    masks = [0, 0]  # set, clear
    for word in value.split(","):
        word = word.strip().lower()
        name = word[1:].strip() if word.startswith("!") else word
        if name not in TCP_FLAGS:
            raise ValueError("%r is not a TCP flag %s" % (name, usage))
        masks[word.startswith("!")] |= 1 << TCP_FLAGS.index(name)
    both = masks[0] & masks[1]
    if both:
        name = TCP_FLAGS[both.bit_length() - 1]
        raise ValueError("%s is both set and clear (%s and !%s): keep one" % (name, name, name))
    return tuple(masks)


def _bounded_parser(least, most, what, hint=""):
    def parse(value):
        if value is None:
            return None
        number = _integer(value)
        if number is None or not least <= number <= most:
            raise ValueError("%s is not %s (%d-%d%s)" % (value, what, least, most, hint))
        return number
    return parse


def _parse_per(value):
    if value is None or value in ("source", "rule"):
        return value
    raise ValueError("%r is not a bucket (use source: one per source address or prefix, or rule: one shared)"
                     % (value,))


def _parse_expires_at(value):
    if value is None:
        return None
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return calendar.timegm(value.utctimetuple())
    match = RFC3339.match(str(value).strip())
    if not match:
        raise ValueError("%r is not an RFC 3339 time with an offset (e.g. 2026-12-05T18:00:00Z or "
                         "2026-12-05T19:00:00+01:00; quote it in YAML)" % (str(value),))
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    try:
        moment = datetime.datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError as error:
        raise ValueError("%r is not an RFC 3339 time (%s)" % (str(value), error))
    offset = 0 if match.group(7) else (int(match.group(9)) * 60 + int(match.group(10))) * 60
    return calendar.timegm(moment.timetuple()) - (offset if match.group(8) == "+" else -offset)


def _integer(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else None


FIELD_PARSERS = (
    ("action", _parse_action), ("source", _parse_network), ("destination", _parse_network),
    ("protocol", _parse_protocol), ("port", _parse_port), ("source_set", _parse_set_name),
    ("destination_set", _parse_set_name), ("source_port", _parse_source_port), ("tcp_flags", _parse_tcp_flags),
    ("icmp_type", _bounded_parser(0, 255, "an ICMP type")), ("icmp_code", _bounded_parser(0, 255, "an ICMP code")),
    ("length", _parse_length), ("ttl", _parse_ttl),
    ("pps", _bounded_parser(1, MAX_PPS, "a packet rate in packets per second")),
    ("bps", _bounded_parser(8, MAX_BPS, "a bit rate in bits per second")),
    ("burst", _bounded_parser(1, MAX_PPS * MAX_BURST_SECONDS, "a burst in packets", ": at least one packet")),
    ("burst_bytes", _bounded_parser(FRAME_BYTES, MAX_BPS // 8 * MAX_BURST_SECONDS, "a burst in bytes",
                                    ": at least one full Ethernet frame")),
    ("per", _parse_per), ("per_prefix", _bounded_parser(1, 32, "an IPv4 prefix length")),
    ("per_prefix6", _bounded_parser(1, 128, "an IPv6 prefix length")),
    ("expires_at", _parse_expires_at), ("expires_after", _bounded_parser(1, LATEST_DEADLINE, "a number of seconds")))


def _consistency_errors(values, failed, where, now):
    """The errors of combinations of fields; a field that failed to parse is left out of them."""
    errors = []
    source, destination, protocol = values["source"], values["destination"], values["protocol"]
    if source is not None and destination is not None and source.version != destination.version:
        errors.append("%s: source %s and destination %s are different address families (split the rule)"
                      % (where, source, destination))
    for key in ("port", "source_port"):
        if values[key] is not None and protocol not in (None,) + PORT_PROTOCOLS:
            errors.append("%s.%s: ports need protocol tcp or udp (or no protocol), not %s"
                          % (where, key, PROTOCOL_NAMES.get(protocol, protocol)))
    errors += _set_errors(values, where)
    family = (source or destination).version if (source or destination) else None
    if (family, protocol) in ((6, PROTOCOLS["icmp"]), (4, PROTOCOLS["icmpv6"])):
        errors.append("%s.protocol: %s with IPv%d addresses never matches (use %s)"
                      % (where, PROTOCOL_NAMES[protocol], family, "icmpv6" if family == 6 else "icmp"))
    if "protocol" not in failed:
        errors += _header_errors(values, where)
    if "action" not in failed:
        errors += _rate_errors(values, failed, where)
    errors += _expiry_errors(values, where, now)
    return errors


def _header_errors(values, where):
    """tcp_flags and icmp_* need the protocol whose header holds them."""
    errors = []
    protocol = values["protocol"]
    if values["tcp_flags"] is not None and protocol != PROTOCOLS["tcp"]:
        errors.append("%s.tcp_flags: needs protocol: tcp (TCP flags are in the TCP header)" % where)
    for key in ("icmp_type", "icmp_code"):
        if values[key] is not None and protocol not in ICMP_PROTOCOLS:
            errors.append("%s.%s: needs protocol: icmp or icmpv6 (the type and code are in the ICMP header)"
                          % (where, key))
    if values["icmp_code"] is not None and values["icmp_type"] is None:
        errors.append("%s.icmp_code: needs icmp_type (a code is one of its type's)" % where)
    if protocol == PROTOCOLS["icmpv6"] and values["icmp_type"] in NEIGHBOUR_DISCOVERY:
        errors.append("%s.icmp_type: %d is neighbour discovery (ICMPv6 types 133-137 always pass before any rule, "
                      "so the rule would never match): remove the rule" % (where, values["icmp_type"]))
    return errors


def _rate_errors(values, failed, where):
    get = values.get
    if get("action") != "rate_limit":
        return ["%s.%s: only for action: rate_limit (this rule's action is %s)" % (where, key, get("action"))
                for key in RATE_KEYS if get(key) is not None]
    errors = []
    if get("pps") is None and get("bps") is None and not failed & {"pps", "bps"}:
        errors.append("%s: action rate_limit needs pps (packets per second) and/or bps (bits per second)" % where)
    for key, rate, unit in (("burst", "pps", "packets"), ("burst_bytes", "bps", "bytes")):
        if get(key) is not None and get(rate) is None and rate not in failed:
            errors.append("%s.%s: needs %s (a burst in %s is of that rate)" % (where, key, rate, unit))
    if get("burst") is not None and get("pps") is not None and get("burst") > get("pps") * MAX_BURST_SECONDS:
        errors.append("%s.burst: %d packets are more than %d s at %d pps (at most %d)"
                      % (where, get("burst"), MAX_BURST_SECONDS, get("pps"), get("pps") * MAX_BURST_SECONDS))
    if get("burst_bytes") is not None and get("bps") is not None and \
            get("burst_bytes") > get("bps") // 8 * MAX_BURST_SECONDS:
        errors.append("%s.burst_bytes: %d bytes are more than %d s at %d bps (at most %d)"
                      % (where, get("burst_bytes"), MAX_BURST_SECONDS, get("bps"),
                         get("bps") // 8 * MAX_BURST_SECONDS))
    if get("per") == "rule":
        errors += ["%s.%s: only with per: source (per: rule has one bucket for all sources)" % (where, key)
                   for key in ("per_prefix", "per_prefix6") if get(key) is not None]
    return errors


def _expiry_errors(values, where, now):
    deadline, after = values["expires_at"], values["expires_after"]
    if deadline is not None and after is not None:
        return ["%s: expires_at and expires_after both given (keep one)" % where]
    if deadline is not None and deadline <= now:
        return ["%s.expires_at: %s is in the past (now is %s): give a later time, or remove the rule"
                % (where, time.strftime(EXPIRES_FORMAT, time.gmtime(deadline)),
                   time.strftime(EXPIRES_FORMAT, time.gmtime(now)))]
    latest = deadline if deadline is not None else (int(now) + after if after is not None else None)
    if latest is not None and latest > LATEST_DEADLINE:
        return ["%s.%s: the deadline is after %s, the latest the data plane holds" % (
            where, "expires_at" if deadline is not None else "expires_after",
            time.strftime(EXPIRES_FORMAT, time.gmtime(LATEST_DEADLINE)))]
    return []


def _fill_rate_defaults(values):
    """The defaults of a rate limit, so that its canonical form shows them."""
    if values["action"] != "rate_limit":
        return
    if values["pps"] is not None and values["burst"] is None:
        values["burst"] = max(1, values["pps"] // 10)
    if values["bps"] is not None and values["burst_bytes"] is None:
        values["burst_bytes"] = max(FRAME_BYTES, values["bps"] // 80)
    if values["per"] is None:
        values["per"] = "source"
    if values["per"] == "source":
        values["per_prefix"] = 32 if values["per_prefix"] is None else values["per_prefix"]
        values["per_prefix6"] = 64 if values["per_prefix6"] is None else values["per_prefix6"]


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
# The first half of xf_rule (the fields before sport_lo): a rule with no more than it packs it, then zeros
FIRST_HALF = struct.Struct("<" + "".join(code for field, code in RULE.fields
                                         if RULE.offset[field] < RULE.offset["sport_lo"]))
ZERO_SECOND_HALF = bytes(RULE.size - FIRST_HALF.size)
PLAIN_COUNT = len(PLAIN_KEYS)
VERDICTS = ("drop", "pass")


def pack_canonical(values):
    """The packed xf_rule (counter 0) of the values of RULE_KEYS (or of PLAIN_KEYS alone) when they are exactly
    Rule.to_dict's form of a valid drop or pass rule with IPv4 or no addresses and none of the keys beyond
    PLAIN_KEYS; else None."""
    if len(values) != PLAIN_COUNT and values[PLAIN_COUNT:] != NOT_PLAIN:
        return None
    action, source, destination, protocol, port, source_set, destination_set = values[:PLAIN_COUNT]
    src, dst = _canonical_ipv4(source), _canonical_ipv4(destination)
    number, ports = _canonical_protocol(protocol), _canonical_port(port)
    if action not in VERDICTS or (source is not None and src is None) or \
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
    return FIRST_HALF.pack(ACTION_CODES[action], flags, number or 0, 4 if (src or dst) else 0, src_len, dst_len,
                           0, low, high, 0, set_tag(source_set) if source_set else src_bytes,
                           set_tag(destination_set) if destination_set else dst_bytes, mask) + ZERO_SECOND_HALF


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
    if rule.more or rule.action == RATE_LIMIT:
        result.update(_canonical_more(_more_values(rule)))
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
                   names.get("source_set"), names.get("destination_set"), **_more_values(rule))
    return decoded, rule.counter


def pack_rule(rule, counter=0):
    """The packed xf_rule of a Rule whose expires_after has been resolved (see _fw_expiry)."""
    if rule.expires_after is not None:
        raise ValueError("pack_rule: expires_after %d is not resolved into expires_at (_fw_expiry.resolve)"
                         % rule.expires_after)
    flags = ((HAS_PROTO if rule.protocol is not None else 0) | (HAS_PORT if rule.port else 0)
             | (HAS_DST if rule.destination is not None else 0) | (SRC_SET if rule.source_set else 0)
             | (DST_SET if rule.destination_set else 0))
    low, high = rule.port or (0, 0)
    source, destination = rule.source, rule.destination
    more, second_half = _second_half(rule)
    return RULE.format.pack(
        ACTION_CODES[rule.action], flags, rule.protocol or 0, rule.family,
        source.prefixlen if source else NO_PREFIX, destination.prefixlen if destination else NO_PREFIX, more,
        low, high, counter, set_tag(rule.source_set) if rule.source_set else _address_bytes(source),
        set_tag(rule.destination_set) if rule.destination_set else _address_bytes(destination),
        destination.netmask.packed if destination else b"", *second_half)


def _address_bytes(network):
    return network.network_address.packed if network is not None else b""


def _second_half(rule):
    """(xf_rule.more, the fields from sport_lo on) of a Rule."""
    more = ((MORE_SPORT if rule.source_port else 0) | (MORE_TCP_FLAGS if rule.tcp_flags else 0)
            | (MORE_ICMP_TYPE if rule.icmp_type is not None else 0)
            | (MORE_ICMP_CODE if rule.icmp_code is not None else 0) | (MORE_LENGTH if rule.length else 0)
            | (MORE_TTL if rule.ttl else 0) | (MORE_EXPIRES if rule.expires_at is not None else 0))
    if not more and rule.action != "rate_limit":
        return 0, NO_MORE
    pps, bps = rule.pps, rule.bps
    limit = (PER_SOURCE if rule.per == "source" else PER_RULE, rule.per_prefix or 0, rule.per_prefix6 or 0) \
        if rule.action == "rate_limit" else (0, 0, 0)
    residues = RESIDUES.pack((pps or 0) % PPS_RESIDUE, (bps or 0) % BPS_RESIDUE,
                             (rule.burst_bytes or 0) % BURST_BYTES_RESIDUE)
    packets = (_cost(PACKET_SCALE, pps), rule.burst * PACKET_SCALE // pps) if pps else (0, 0)
    bits = (_cost(BIT_SCALE, bps), rule.burst_bytes * BIT_SCALE // bps) if bps else (0, 0)
    return more, ((rule.source_port or (0, 0)) + (rule.length or (0, 0)) + (rule.ttl or (0, 0))
                  + (rule.tcp_flags or (0, 0)) + (rule.icmp_type or 0, rule.icmp_code or 0) + limit
                  + (residues, (rule.expires_at or 0) * NS) + packets + bits)


def _more_values(rule):
    """The Rule values of the keys beyond PLAIN_KEYS of an unpacked xf_rule."""
    more = rule.more
    values = dict.fromkeys(MORE_MATCHES + RATE_KEYS + EXPIRY_KEYS)
    for key, flag, bounds in (("source_port", MORE_SPORT, (rule.sport_lo, rule.sport_hi)),
                              ("tcp_flags", MORE_TCP_FLAGS, (rule.tcp_set, rule.tcp_clear)),
                              ("icmp_type", MORE_ICMP_TYPE, rule.icmp_type), ("icmp_code", MORE_ICMP_CODE, rule.icmp_code),
                              ("length", MORE_LENGTH, (rule.length_lo, rule.length_hi)),
                              ("ttl", MORE_TTL, (rule.ttl_lo, rule.ttl_hi)),
                              ("expires_at", MORE_EXPIRES, rule.expires // NS)):
        if more & flag:
            values[key] = bounds
    if rule.action == RATE_LIMIT:
        pps_low, bps_low, burst_bytes_low = RESIDUES.unpack(rule.reserved)
        if rule.packet_cost:
            values["pps"] = _rate_of(PACKET_SCALE, rule.packet_cost, pps_low, PPS_RESIDUE)
            values["burst"] = _amount_of(rule.packet_burst, PACKET_SCALE, values["pps"], 0, 1)
        if rule.byte_cost:
            values["bps"] = _rate_of(BIT_SCALE, rule.byte_cost, bps_low, BPS_RESIDUE)
            values["burst_bytes"] = _amount_of(rule.byte_burst, BIT_SCALE, values["bps"], burst_bytes_low,
                                               BURST_BYTES_RESIDUE)
        values["per"] = "source" if rule.limit_per == PER_SOURCE else "rule"
        if values["per"] == "source":
            values["per_prefix"], values["per_prefix6"] = rule.limit_prefix4, rule.limit_prefix6
    return values


def _cost(scale, rate):
    """round((scale << COST_SHIFT) / rate) in integers (ties to even, as round() of the exact quotient)."""
    quotient, remainder = divmod(scale << COST_SHIFT, rate)
    return quotient + (2 * remainder > rate or (2 * remainder == rate and quotient & 1))


def _rate_of(scale, cost, low_bits, modulus):
    """The rate with this _cost whose remainder by modulus is low_bits: large rates share a cost, and the rates
    that do are fewer than modulus (see RESIDUES)."""
    rate = max(1, (2 * scale << COST_SHIFT) // (2 * cost + 1))
    while _cost(scale, rate) > cost:
        rate += 1
    while rate > 1 and _cost(scale, rate - 1) == cost:
        rate -= 1
    return rate + (low_bits - rate) % modulus


def _amount_of(burst, scale, rate, low_bits, modulus):
    """The burst amount (packets or bytes) with burst = amount * scale // rate and this remainder by modulus."""
    least = -(-burst * rate // scale)
    return least + (low_bits - least) % modulus


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
    for key, word in (("port", "port"), ("source_port", "source_port"), ("tcp_flags", "tcp_flags"),
                      ("icmp_type", "icmp_type"), ("icmp_code", "code"), ("length", "length"), ("ttl", "ttl")):
        if rule.get(key) is not None:
            words += [word, str(rule[key])]
    return " ".join(words)


def _side_text(rule, side):
    if rule.get(side + "_set"):
        return "set " + rule[side + "_set"]
    return rule.get(side) or "any"


def _limit_text(rule):
    """`500 pps burst 1000 and 1000000 bps per source /32`: a burst is shown when it is not the default."""
    rates = []
    if rule.get("pps") is not None:
        rates.append("%d pps" % rule["pps"] + (" burst %d" % rule["burst"]
                                               if rule.get("burst") != max(1, rule["pps"] // 10) else ""))
    if rule.get("bps") is not None:
        rates.append("%d bps" % rule["bps"] + (" burst %d bytes" % rule["burst_bytes"]
                                               if rule.get("burst_bytes") != max(FRAME_BYTES, rule["bps"] // 80)
                                               else ""))
    if rule.get("per") == "rule":
        return " and ".join(rates) + " per rule"
    addresses = [rule.get(side) for side in ("source", "destination") if rule.get(side)]
    family = (":" in addresses[0] and 6 or 4) if addresses else None
    prefixes = {4: "/%s" % rule.get("per_prefix"), 6: "/%s" % rule.get("per_prefix6"),
                None: "/%s, IPv6 /%s" % (rule.get("per_prefix"), rule.get("per_prefix6"))}[family]
    return " and ".join(rates) + " per source " + prefixes


def rule_line(rule):
    """One line per rule entry, as diff mode shows it: `drop tcp from any to 198.18.0.0/24 port 22 (ssh)`,
    `rate_limit tcp from any to any tcp_flags syn,!ack (500 pps per source /32, IPv6 /64) expires ...`."""
    text = "%s %s" % (rule["action"], match_text(rule))
    if rule["action"] == "rate_limit":
        text += " (%s)" % _limit_text(rule)
    if rule.get("expires_at"):
        text += " expires %s" % rule["expires_at"]
    elif rule.get("expires_after"):
        text += " expires after %d s" % rule["expires_after"]
    if rule.get("name"):
        text += " (%s)" % rule["name"]
    return text
