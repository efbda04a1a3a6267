# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall's rule model: validation, the compiler to map entries, the
pure-Python reference classifier and the double-buffered rule-set writer.

Map layouts mirror bpf/xdp_firewall.h; semantics are documented in docs/RULES.md.
Pure Python (no Ansible), so modules, tests and the benchmark share it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import hashlib
import ipaddress
import itertools
import os
import socket
import struct
from array import array
from collections import defaultdict, deque, namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf

SCHEMA_VERSION = 1
CHAIN_MAX = 16
MAX_RULES = 131072
MAX_PREFIXES = 131072
PORTS = 65536
GEN_TCP, GEN_UDP, GEN_PROTO = 0, PORTS, 2 * PORTS
GEN_ENTRIES = GEN_PROTO + 256
NO_RULE = 0xFFFFFFFF
NO_PREFIX = 0xFF
HAS_PROTO, HAS_PORT, HAS_DST = 1, 2, 4

XDP_ACTIONS = {"aborted": 0, "drop": 1, "pass": 2, "tx": 3, "redirect": 4}
ACTION_NAMES = dict((code, name) for name, code in XDP_ACTIONS.items())
REASONS = ("aborted", "drop", "pass", "tx", "redirect", "malformed")
RULE_ACTIONS = ("drop", "pass")
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
PROTOCOL_NAMES = dict((number, name) for name, number in PROTOCOLS.items())
PORT_PROTOCOLS = (PROTOCOLS["tcp"], PROTOCOLS["udp"])
RULE_KEYS = ("action", "source", "destination", "protocol", "port")

# Prefix maps: (short name, side, family, exact-match hash?) in xf_slot_meta order.
PREFIX_MAPS = ("s4h", "s4t", "s6h", "s6t", "d4h", "d4t", "d6h", "d6t")
RULESET_MAPS = ("rules", "gen") + PREFIX_MAPS

RULE_FORMAT = struct.Struct("<4B2BH2HI16s16s16s")
CHAIN_FORMAT = struct.Struct("<I%dI" % CHAIN_MAX)
META_FORMAT = struct.Struct("<3I%dI" % len(PREFIX_MAPS))
CONFIG_HEAD = struct.Struct("<2I")
DATAREC_FORMAT = struct.Struct("<2Q")
EVENT_FORMAT = struct.Struct("<Q3I4B2HI16s16s")
U32 = struct.Struct("<I")
ZERO_U32 = U32.pack(0)
READ_CHUNK = 8192  # elements per BPF_MAP_LOOKUP_BATCH call when reading a map back


class RuleError(ValueError):
    """Invalid rules; `errors` lists one message per problem, each naming its field."""

    def __init__(self, errors):
        super(RuleError, self).__init__("; ".join(errors))
        self.errors = list(errors)


class CompileError(ValueError):
    pass


class Rule(namedtuple("Rule", RULE_KEYS)):
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
        return result

    @property
    def family(self):
        network = self.source or self.destination
        return network.version if network else 0


# --- validation ----------------------------------------------------------------------

def parse_rules(items, field="config"):
    """Validates a list of rule dicts (the `config` option); raises RuleError listing every problem."""
    if not isinstance(items, (list, tuple)):
        raise RuleError(["%s: must be a list of rules, got %s" % (field, type(items).__name__)])
    rules, errors = [], []
    for index, item in enumerate(items):
        where = "%s[%d]" % (field, index)
        try:
            rules.append(parse_rule(item, where))
        except RuleError as error:
            errors.extend(error.errors)
    if errors:
        raise RuleError(errors)
    return rules


def parse_rule(item, where="rule"):
    if not isinstance(item, dict):
        raise RuleError(["%s: must be a dict with an action and optional %s"
                         % (where, ", ".join(RULE_KEYS[1:]))])
    errors = ["%s.%s: unknown key (allowed: %s)" % (where, key, ", ".join(RULE_KEYS))
              for key in sorted(set(item) - set(RULE_KEYS), key=str)]
    values = {}
    for key, parser in (("action", _parse_action), ("source", _parse_network),
                        ("destination", _parse_network), ("protocol", _parse_protocol), ("port", _parse_port)):
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
    family = (source or destination).version if (source or destination) else None
    if (family, protocol) in ((6, PROTOCOLS["icmp"]), (4, PROTOCOLS["icmpv6"])):
        errors.append("%s.protocol: %s with IPv%d addresses never matches (use %s)"
                      % (where, PROTOCOL_NAMES[protocol], family, "icmpv6" if family == 6 else "icmp"))
    return errors


def parse_action(value, field="default_action"):
    if value not in RULE_ACTIONS:
        raise RuleError(["%s: %r is not an action (use drop or pass)" % (field, value)])
    return value


# --- canonical values, packed without ipaddress objects ---------------------------------
# 100,000 rules are too many to build ipaddress objects for on every run: values already in the
# canonical form of Rule.to_dict (IPv4) are packed directly; anything else goes through parse_rule.

FULL_MASK4 = 0xFFFFFFFF


def pack_canonical(values):
    """The packed xf_rule (counter 0) of (action, source, destination, protocol, port) when they are
    exactly Rule.to_dict's form of a valid rule with IPv4 or no addresses; else None."""
    action, source, destination, protocol, port = values
    src, dst = _canonical_ipv4(source), _canonical_ipv4(destination)
    number, ports = _canonical_protocol(protocol), _canonical_port(port)
    if action not in RULE_ACTIONS or (source is not None and src is None) or \
            (destination is not None and dst is None) or (protocol is not None and number is None) or \
            (port is not None and (ports is None or number not in (None,) + PORT_PROTOCOLS)) or \
            (number == PROTOCOLS["icmpv6"] and (src or dst)):
        return None
    flags = (HAS_PROTO if number is not None else 0) | (HAS_PORT if ports else 0) | (HAS_DST if dst else 0)
    (src_len, src_bytes), (dst_len, dst_bytes) = src or (NO_PREFIX, b""), dst or (NO_PREFIX, b"")
    mask = (FULL_MASK4 ^ (FULL_MASK4 >> dst_len)).to_bytes(4, "big") if dst else b""
    low, high = ports or (0, 0)
    return RULE_FORMAT.pack(XDP_ACTIONS[action], flags, number or 0, 4 if (src or dst) else 0, src_len, dst_len,
                            0, low, high, 0, src_bytes, dst_bytes, mask)


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


def canonical_of_packed(packed):
    """Rule.to_dict of a packed xf_rule, without ipaddress objects for IPv4."""
    rule = Fields._make(RULE_FORMAT.unpack(packed))
    result = {"action": ACTION_NAMES[rule.action]}
    for key, length, raw in (("source", rule.src_len, rule.source), ("destination", rule.dst_len, rule.destination)):
        if length != NO_PREFIX:
            result[key] = _network_text(rule.family, raw, length)
    if rule.flags & HAS_PROTO:
        result["protocol"] = PROTOCOL_NAMES.get(rule.protocol, rule.protocol)
    if rule.flags & HAS_PORT:
        result["port"] = rule.low if rule.low == rule.high else "%d-%d" % (rule.low, rule.high)
    return result


def _network_text(family, raw, length):
    if family == 4:
        return "%d.%d.%d.%d/%d" % (raw[0], raw[1], raw[2], raw[3], length)
    return str(ipaddress.IPv6Network((int.from_bytes(raw, "big"), length)))


def first_match(packed, packet):
    """Position of the first packed rule matching an 'ip' Packet, or None: classify's rule order on packed rules."""
    source, destination = int(packet.src), int(packet.dst)
    width = 32 if packet.family == 4 else 128
    for position, rule in enumerate(map(Fields._make, RULE_FORMAT.iter_unpack(b"".join(packed)))):
        if (rule.src_len != NO_PREFIX or rule.dst_len != NO_PREFIX) and rule.family != packet.family:
            continue
        if not (_prefix_holds(rule.src_len, rule.source, source, width)
                and _prefix_holds(rule.dst_len, rule.destination, destination, width)):
            continue
        if rule.flags & HAS_PROTO and rule.protocol != packet.proto:
            continue
        if rule.flags & HAS_PORT and not (packet.dport is not None and rule.low <= packet.dport <= rule.high):
            continue
        return position
    return None


def _prefix_holds(length, raw, address, width):
    if length == NO_PREFIX:
        return True
    shift = width - length
    return int.from_bytes(raw[:width // 8], "big") >> shift == address >> shift


# --- counter slots ----------------------------------------------------------------------

def assign_counters(rules, previous_rules=(), previous_counters=(), live=()):
    """Hit-counter slots for `rules`: a rule kept from the previous set keeps its slot.

    Returns (counters, fresh): fresh lists the slots given to new rules, chosen
    outside the previous slots and the `live` ones (slots that other rules keep)
    while any are left, so they can be zeroed before the switch without touching
    a live counter.
    """
    if len(rules) > MAX_RULES:
        raise CompileError("%d rules exceed the program's capacity of %d" % (len(rules), MAX_RULES))
    previous = dict(zip(previous_rules, previous_counters))
    if len(previous) == len(previous_counters):  # no rule twice: a plain lookup is enough
        counters = [previous.pop(rule, None) for rule in rules]
    else:
        kept = defaultdict(deque)
        for rule, counter in zip(previous_rules, previous_counters):
            kept[rule].append(counter)
        counters = [kept[rule].popleft() if kept.get(rule) else None for rule in rules]
    taken = set(previous_counters) | set(live) | set(counter for counter in counters if counter is not None)
    spare = (slot for slot in range(MAX_RULES) if slot not in taken)
    reusable = deque(sorted(set(previous_counters) - set(counters)))
    fresh = []
    for position, counter in enumerate(counters):
        if counter is None:
            counter = next(spare, None)
            if counter is None:
                counter = reusable.popleft()
            counters[position] = counter
            fresh.append(counter)
    return counters, fresh


# --- compiler ---------------------------------------------------------------------------

Compiled = namedtuple("Compiled", "default_action rules gen prefixes meta counters")

# A packed xf_rule read back field by field; the compiler works on these, so rules read from the
# kernel or packed straight from canonical config never need ipaddress objects.
Fields = namedtuple("Fields", "action flags protocol family src_len dst_len reserved low high counter "
                              "source destination mask")
COUNTER_OFFSET = 12  # xf_rule.counter: bytes 12-15
# The fields the compiler needs, with each address split after its first 4 bytes, which are the whole of an
# IPv4 address: the compiler reads rules column by column (one tuple per field) and needs no slicing for
# IPv4. Action, counter and mask are skipped (pad bytes): unpacking them was a quarter of the work.
Columns = namedtuple("Columns", "flags protocol family src_len dst_len low high "
                                "source_head source_tail destination_head destination_tail")
COLUMN_FORMAT = struct.Struct("<x3B2B2x2H4x4s12s4s12s16x")


def compile_rules(rules, default_action, counters=None):
    """The map entries of one rule set (one slot), as bytes; see compile_packed."""
    return compile_packed([pack_rule(rule) for rule in rules], default_action, counters)


def compile_packed(packed, default_action, counters=None, positions=None):
    """The map entries of the rule set given as packed xf_rule (their counter fields are replaced).

    positions: the position of each rule (increasing; see place_rules), 0, 1, 2... when not given; the
    positions between them are holes, which hold an empty rule that no index refers to.
    rules: [packed xf_rule by position]; gen: 131328 u32 (first position + 1);
    prefixes: {short map name: {key: packed xf_chain}}; meta: packed xf_slot_meta.
    """
    if len(packed) > MAX_RULES:
        raise CompileError("%d rules exceed the program's capacity of %d" % (len(packed), MAX_RULES))
    counters = list(range(len(packed))) if counters is None else counters
    positions = range(len(packed)) if positions is None else positions
    raw = b"".join(packed)
    columns = _columns(raw)
    prefixes = dict((name, {}) for name in PREFIX_MAPS)
    flags = _by_position(columns.flags, positions, 0)
    _compile_chains(columns, positions, flags, "source", prefixes)
    _compile_chains(columns, positions, flags, "destination", prefixes)
    general = [index for index, (src_len, dst_len) in enumerate(zip(columns.src_len, columns.dst_len))
               if src_len == NO_PREFIX and dst_len == NO_PREFIX]
    action = XDP_ACTIONS[default_action]
    rules = _by_position(_split_with_counters(raw, counters), positions, EMPTY_RULE)
    meta = META_FORMAT.pack(action, len(rules), len(general), *(len(prefixes[name]) for name in PREFIX_MAPS))
    return Compiled(action, rules, _compile_general(columns, positions, general), prefixes, meta, counters)


EMPTY_RULE = bytes(RULE_FORMAT.size)  # a hole: action 0 (no rule has it), never in an index


def _by_position(values, positions, hole):
    """values (one per rule) laid out by position, hole between them."""
    if isinstance(positions, range):
        return list(values)
    laid_out = [hole] * (positions[-1] + 1 if positions else 0)
    for position, value in zip(positions, values):
        laid_out[position] = value
    return laid_out


def place_rules(kept, limit=MAX_RULES):
    """Positions for a rule list, increasing: kept[i] is the position rule i had and may keep (increasing
    where not None), None for a rule to place. Rules to place between two kept ones take the positions
    after the first, and the kept rules after them give theirs up until there is room; when the positions
    run out before `limit`, every rule is renumbered 0, 1, 2... So a change leaves every other rule where
    it is, and the index maps change only for the rules that change."""
    positions = list(kept)
    start, previous = 0, -1
    while start < len(positions):
        if positions[start] is not None:
            previous, start = positions[start], start + 1
            continue
        end = start
        while True:
            while end < len(positions) and positions[end] is None:
                end += 1
            if end == len(positions) and previous + end - start >= limit:
                return range(len(positions))
            if end == len(positions) or positions[end] - previous > end - start:
                break
            positions[end] = None  # too close: this kept rule moves along
        positions[start:end] = range(previous + 1, previous + 1 + end - start)
        previous, start = positions[end - 1], end
    return positions


def _columns(raw):
    """The Columns of concatenated packed rules: columns.src_len[position], and so on."""
    if not raw:
        return Columns._make(() for field in Columns._fields)
    return Columns._make(zip(*COLUMN_FORMAT.iter_unpack(raw)))


def _split_with_counters(raw, counters):
    """The packed rules of concatenated raw, one bytes each, their counter fields set to counters."""
    size = RULE_FORMAT.size
    rules = bytearray(raw)
    counter_bytes = struct.pack("<%dI" % len(counters), *counters)
    for byte in range(U32.size):
        rules[COUNTER_OFFSET + byte::size] = counter_bytes[byte::U32.size]
    rules = bytes(rules)
    return [rules[offset:offset + size] for offset in range(0, len(rules), size)]


def patch_compiled(meta, rules, default_action, changed):
    """The Compiled of a rule set whose matches are those of the rule set with this meta, which the inactive
    slot's index maps already hold (see inactive_with_matches): rules and meta only. rules: the packed rules
    by position (holes included) of the rule set now, changed: {position: (packed rule, counter)}."""
    action = XDP_ACTIONS[default_action]
    meta = META_FORMAT.pack(action, *META_FORMAT.unpack(meta)[1:])
    rules = list(rules)
    for position, (packed, counter) in changed.items():
        rules[position] = packed[:COUNTER_OFFSET] + U32.pack(counter) + packed[COUNTER_OFFSET + U32.size:]
    return Compiled(action, rules, None, None, meta, None)


def match_digest(raw):
    """Digest of concatenated packed rules without their actions and counters: the index maps
    (gen, prefixes) of two rule sets are the same when this and their counts are."""
    masked = bytearray(raw)
    count = len(masked) // RULE_FORMAT.size
    for offset in (0,) + tuple(range(COUNTER_OFFSET, COUNTER_OFFSET + 4)):
        masked[offset::RULE_FORMAT.size] = bytes(count)
    return hashlib.sha256(masked).digest()


def same_matches(packed, other):
    """True when two packed rules differ at most in action and counter."""
    return packed[1:COUNTER_OFFSET] == other[1:COUNTER_OFFSET] and \
        packed[COUNTER_OFFSET + 4:] == other[COUNTER_OFFSET + 4:]


def pack_rule(rule, counter=0):
    """The packed xf_rule of a Rule."""
    flags = ((HAS_PROTO if rule.protocol is not None else 0) | (HAS_PORT if rule.port else 0)
             | (HAS_DST if rule.destination is not None else 0))
    low, high = rule.port or (0, 0)
    source, destination = rule.source, rule.destination
    return RULE_FORMAT.pack(
        XDP_ACTIONS[rule.action], flags, rule.protocol or 0, rule.family,
        source.prefixlen if source else NO_PREFIX, destination.prefixlen if destination else NO_PREFIX, 0,
        low, high, counter, _address_bytes(source), _address_bytes(destination),
        destination.netmask.packed if destination else b"")


def _address_bytes(network):
    return network.network_address.packed if network is not None else b""


def _is_unconditional(flags, side):
    """True when a rule with these flags, found through its `side` prefix, matches without further checks."""
    conditions = HAS_PROTO | HAS_PORT | (HAS_DST if side == "source" else 0)
    return not flags & conditions


_CHAIN_PAD = [0] * CHAIN_MAX
ONE_RULE_CHAIN = struct.Struct("<2I%dx" % (4 * (CHAIN_MAX - 1)))  # CHAIN_FORMAT of a one-rule chain


def _side_lengths(columns, side):
    """Per position, the prefix length by which `side` finds the rule, NO_PREFIX when it does not: every
    rule with a source prefix is found by it, a rule with a destination prefix alone by the destination."""
    if side == "source":
        return columns.src_len
    return [dst_len if src_len == NO_PREFIX else NO_PREFIX for src_len, dst_len in zip(columns.src_len, columns.dst_len)]


# The rules of one side, family and prefix length: `first` maps each address to the first rule's position,
# `more` the addresses that several rules have to the later positions (most rule sets have none).
PrefixGroup = namedtuple("PrefixGroup", "first more")


def _group_positions(group, address):
    """Positions of the rules of group with this address, in order."""
    first = group.first.get(address)
    return [] if first is None else [first] + group.more.get(address, [])


def _side_groups(columns, positions, side):
    """{(family, prefix length): PrefixGroup} of the rules found by `side`."""
    by_length = dict((family, [PrefixGroup({}, {}) for length in range(width + 1)])
                     for family, width in ((4, 32), (6, 128)))
    ipv4, ipv6 = by_length[4], by_length[6]
    rows = zip(positions, columns.family, _side_lengths(columns, side),
               getattr(columns, side + "_head"), getattr(columns, side + "_tail"))
    for position, family, length, head, tail in rows:
        if length == NO_PREFIX:
            continue
        if family == 4:
            group, address = ipv4[length], head
        else:
            group, address = ipv6[length], head + tail
        if group.first.setdefault(address, position) != position:
            group.more.setdefault(address, []).append(position)
    return dict(((family, length), group) for family, groups in by_length.items()
                for length, group in enumerate(groups) if group.first)


def _compile_chains(columns, positions, flags, side, prefixes):
    """Each prefix of `side` gets the ordered positions of the rules whose prefix contains it; flags: the
    rules' flags by position."""
    groups = _side_groups(columns, positions, side)
    for (version, prefixlen), group in groups.items():
        width = 32 if version == 4 else 128
        shorter = [length for family, length in groups if family == version and length < prefixlen]
        target = prefixes["%s%d%s" % (side[0], version, "h" if prefixlen == width else "t")]
        key_head = b"" if prefixlen == width else U32.pack(prefixlen)
        if not (shorter or group.more):  # one rule per address: no chain to order or truncate
            target.update(zip(map(key_head.__add__, group.first),
                              map(ONE_RULE_CHAIN.pack, itertools.repeat(1), group.first.values())))
            continue
        for raw in group.first:
            chain = _group_positions(group, raw)
            if shorter:
                chain = sorted(chain + _covering_positions(groups, version, shorter, raw))
            if len(chain) == 1:
                target[key_head + raw] = ONE_RULE_CHAIN.pack(1, chain[0])
                continue
            chain = _truncate(chain, flags, side, version, prefixlen, int.from_bytes(raw, "big"))
            target[key_head + raw] = CHAIN_FORMAT.pack(len(chain), *chain, *_CHAIN_PAD[len(chain):])


def _covering_positions(groups, version, lengths, raw):
    """Positions of the rules whose prefix of one of these lengths contains the address raw."""
    width = len(raw) * 8
    address = int.from_bytes(raw, "big")
    return [position for length in lengths for position in _group_positions(
        groups[version, length], (address >> (width - length) << (width - length)).to_bytes(width // 8, "big"))]


def _truncate(chain, flags, side, version, prefixlen, address):
    for index, position in enumerate(chain):
        if _is_unconditional(flags[position], side):
            chain = chain[:index + 1]
            break
    if len(chain) > CHAIN_MAX:
        network = (ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network)((address, prefixlen))
        raise CompileError(
            "%s %s is covered by %d conditional rules (positions %s...), more than the %d one address can "
            "carry: merge rules on that prefix or put an unconditional rule for it earlier"
            % (side, network, len(chain), ", ".join(str(p) for p in chain[:CHAIN_MAX]), CHAIN_MAX))
    return chain


def _compile_general(columns, positions, general):
    """First general rule (+1) per TCP port, UDP port and protocol; later writes are earlier rules. general:
    the indexes of the rules with neither source nor destination."""
    table = [0] * GEN_ENTRIES
    for index in reversed(general):
        flags, first = columns.flags[index], positions[index] + 1
        protocol = columns.protocol[index] if flags & HAS_PROTO else None
        if not flags & HAS_PORT:
            protocols = range(256) if protocol is None else (protocol,)
            for number in protocols:
                table[GEN_PROTO + number] = first
            continue
        low, high = columns.low[index], columns.high[index]
        for number, base in ((PROTOCOLS["tcp"], GEN_TCP), (PROTOCOLS["udp"], GEN_UDP)):
            if protocol in (None, number):
                table[base + low:base + high + 1] = [first] * (high - low + 1)
    return table


# --- reference classifier -------------------------------------------------------------

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


def rule_matches(rule, packet):
    return (_contains(rule.source, packet.src) and _contains(rule.destination, packet.dst)
            and rule.protocol in (None, packet.proto)
            and (rule.port is None or (packet.dport is not None and rule.port[0] <= packet.dport <= rule.port[1])))


def classify(rules, default_action, packet):
    """The verdict the program must give: Verdict(action, position or None, reason).

    reason: 'rule', 'default', 'always_pass' (ARP, ND) or 'malformed'.
    """
    if packet.kind in ("arp", "nd"):
        return Verdict("pass", None, "always_pass")
    if packet.kind == "malformed":
        return Verdict("drop", None, "malformed")
    if packet.kind == "ip":
        for position, rule in enumerate(rules):
            if rule_matches(rule, packet):
                return Verdict(rule.action, position, "rule")
    return Verdict(default_action, None, "default")


def stats_reason(verdict):
    """The xf_stats index a verdict is counted under."""
    return REASONS.index("malformed" if verdict.reason == "malformed" else verdict.action)


# --- kernel side: the double-buffered writer and counters ------------------------------

def map_fds(bpf_object):
    """{map name: fd} of a loaded BpfObject, the `maps` argument of the functions below."""
    return dict((bpf_map.name, bpf_map.fd) for bpf_map in bpf_object.maps if bpf_map.name.startswith("xf_"))


def _config_size():
    return CONFIG_HEAD.size + 2 * META_FORMAT.size


def read_config(maps):
    """(active slot, sample rate, [meta bytes of slot 0, slot 1])."""
    raw = _libbpf.map_lookup(maps["xf_config"], ZERO_U32, _config_size())
    active, rate = CONFIG_HEAD.unpack_from(raw)
    metas = [raw[CONFIG_HEAD.size + slot * META_FORMAT.size:][:META_FORMAT.size] for slot in (0, 1)]
    return active & 1, rate, metas


def _write_config(maps, active, rate, metas):
    _libbpf.map_update(maps["xf_config"], ZERO_U32, CONFIG_HEAD.pack(active, rate) + metas[0] + metas[1])


def set_sample_rate(maps, rate):
    """1 in `rate` drops go to xf_events; 0 turns sampling off. Takes effect at once."""
    if not 0 <= rate <= 0xFFFFFFFF:
        raise ValueError("sample rate %r is not 0 (off) or a positive 32-bit number" % (rate,))
    active, _rate, metas = read_config(maps)
    _write_config(maps, active, rate, metas)


def apply_ruleset(maps, compiled, fresh_counters=(), rules_now=None):
    """Writes `compiled` into the inactive slot (only what differs), switches to it, then writes it
    into the slot it left as well.

    Packets see either the old rule set or the new one, never a mix: the program
    reads the active slot once per packet, and the switch changes one word. The slot
    left is rewritten only once no packet can still use it; with both slots alike, the
    next change that keeps every rule's match writes only the rules that change
    (compiled without index maps, see patch_compiled), and the slot left takes the edits
    found for the first slot without being read back. rules_now: {slot: its packed rules}
    for slots whose rules are known, which are then not read back.
    """
    active, rate, metas = read_config(maps)
    target = 1 - active
    rules_now = dict(rules_now or {})
    alike = _slots_alike(maps, metas, rules_now)
    wait_for_packets_in_flight()
    edits = _slot_edits(maps, target, compiled, rules_now.get(target))
    _write_slot(maps, target, compiled, edits, (active, rate, metas))
    reset_hits(maps, fresh_counters)
    _write_config(maps, target, rate, metas)
    wait_for_packets_in_flight()
    if not alike:
        edits = _slot_edits(maps, active, compiled, rules_now.get(active))
    _write_slot(maps, active, compiled, edits, (target, rate, metas))


def _slots_alike(maps, metas, rules_now):
    """True when both slots hold one rule set, so that the same edits bring either to a new one: the same
    finished meta and the same packed rules. A slot's meta is final only once all its maps hold what was
    compiled from its rules and default action (see _write_slot), and compiling is a function of those.
    Fills rules_now with the rules read."""
    if metas[0] != metas[1] or metas[0] == UNFINISHED_META:
        return False
    count = META_FORMAT.unpack_from(metas[0])[1]
    for slot in (0, 1):
        known = rules_now.get(slot)
        if known is None or len(known) < count * RULE_FORMAT.size:
            rules_now[slot] = _libbpf.array_values(maps["xf_rules_%d" % slot], RULE_FORMAT.size, count)
    size = count * RULE_FORMAT.size
    return rules_now[0][:size] == rules_now[1][:size]


def inactive_with_matches(maps, raw, meta):
    """(inactive slot, its packed rules) when its index maps are those of the rule set with these
    concatenated packed rules and meta: its counts are the same and its rules have the same matches;
    else None.

    _write_slot marks a slot's meta unfinished while it writes the slot's maps, so a slot whose meta
    shows a rule set's counts holds complete maps even when a run stopped part-way.
    """
    active, _rate, metas = read_config(maps)
    target = 1 - active
    if metas[target][4:] != meta[4:]:  # all but the default action
        return None
    count = META_FORMAT.unpack_from(meta)[1]
    inactive = _libbpf.array_values(maps["xf_rules_%d" % target], RULE_FORMAT.size, count)
    return (target, inactive) if match_digest(inactive) == match_digest(raw) else None


# What makes a slot hold a compiled rule set: rules and gen are the positions and indexes to write; prefixes
# is {short map name: (keys to delete, keys to write)}, or None when compiled carries no index maps.
SlotEdits = namedtuple("SlotEdits", "rules gen prefixes")


def _slot_edits(maps, slot, compiled, rules_now):
    """The SlotEdits of one slot, found by reading it back (its rules only when rules_now does not hold
    them). rules_now, when given, are the rules of a slot whose meta is final, so its index maps are
    those compiled from them."""
    rules = _rule_edits(maps["xf_rules_%d" % slot], compiled.rules, rules_now)
    if compiled.prefixes is None:
        return SlotEdits(rules, None, None)
    prefixes = None if rules_now is None else _host_prefix_edits(rules_now, compiled, rules)
    if prefixes is None:
        prefixes = dict((name, _prefix_edits(maps["xf_%s_%d" % (name, slot)], compiled.prefixes[name]))
                        for name in PREFIX_MAPS)
    return SlotEdits(rules, _general_edits(maps["xf_gen_%d" % slot], compiled.gen), prefixes)


TRIE_MAPS = tuple(index for index, name in enumerate(PREFIX_MAPS) if name.endswith("t"))
HOST_EDITS_UP_TO = 8  # 1 in N rules differing at most, for _host_prefix_edits
SOURCE_OFFSET, DESTINATION_OFFSET = 16, 32  # xf_rule.src, xf_rule.dst; family, src_len, dst_len: bytes 3-5


def _host_prefix_edits(current, compiled, differing):
    """The prefix map edits from a slot holding the index maps compiled from `current` (concatenated packed
    rules by position) to `compiled`, found from the rules at the differing positions alone; None when the
    new set has prefixes shorter than a host's, or a differing rule has one. With host prefixes only, an
    entry's chain holds the rules with its address and nothing else, so only the entries of the rules that
    changed (or moved) can change, and no map needs reading back. differing: positions that may differ."""
    counts = META_FORMAT.unpack(compiled.meta)[3:]
    if any(counts[index] for index in TRIE_MAPS):
        return None
    size = RULE_FORMAT.size
    changed = [position for position in differing
               if current[position * size:(position + 1) * size] != compiled.rules[position]]
    left_behind = range(len(compiled.rules), len(current) // size)  # past the new span
    if len(changed) + len(left_behind) > len(compiled.rules) // HOST_EDITS_UP_TO:
        return None  # reading the maps back is cheaper than looking at most rules
    positions = itertools.chain(changed, left_behind)
    touched = dict((name, set()) for name in PREFIX_MAPS)
    for position in positions:
        for rule in (current[position * size:(position + 1) * size],
                     compiled.rules[position] if position < len(compiled.rules) else b""):
            entry = _host_entry(rule)
            if entry is None:
                return None
            if entry:
                touched[entry[0]].add(entry[1])
    return dict((name, ([key for key in keys if key not in compiled.prefixes[name]],
                        [key for key in keys if key in compiled.prefixes[name]]))
                for name, keys in touched.items())


def _host_entry(rule):
    """(prefix map, key) of the entry that finds a packed rule; () for no rule (a hole, past the span) or a
    general one; None for a prefix shorter than a host's."""
    if not rule or rule[0] == 0:
        return ()
    family, side, length, address = rule[3], "s", rule[4], rule[SOURCE_OFFSET:]
    if length == NO_PREFIX:
        side, length, address = "d", rule[5], rule[DESTINATION_OFFSET:]
    if length == NO_PREFIX:
        return ()
    width = 32 if family == 4 else 128
    if length != width:
        return None
    return "%s%dh" % (side, family), address[:width // 8]


def _write_slot(maps, slot, compiled, edits, config):
    """Applies edits to one slot (not the active one): prefix maps, the general index, then the rules; its
    meta in config (active slot, rate, metas) reads UNFINISHED until all is written."""
    active, rate, metas = config
    metas[slot] = UNFINISHED_META
    _write_config(maps, active, rate, metas)
    if edits.prefixes is not None:
        for name, (stale, changed) in edits.prefixes.items():
            fd = maps["xf_%s_%d" % (name, slot)]
            _libbpf.map_delete_batch(fd, stale)
            _libbpf.map_update_batch(fd, changed, [compiled.prefixes[name][key] for key in changed])
        _libbpf.map_update_batch(maps["xf_gen_%d" % slot], [U32.pack(index) for index in edits.gen],
                                 [U32.pack(compiled.gen[index]) for index in edits.gen])
    _libbpf.map_update_batch(maps["xf_rules_%d" % slot], [U32.pack(position) for position in edits.rules],
                             [compiled.rules[position] for position in edits.rules])
    metas[slot] = compiled.meta
    _write_config(maps, active, rate, metas)


UNFINISHED_META = META_FORMAT.pack(0, NO_RULE, *[0] * (1 + len(PREFIX_MAPS)))  # no rule set has NO_RULE rules


def _rule_edits(fd, rules, current=None):
    """The positions in the blocks of RULE_BLOCK positions that differ from current (read when not given):
    comparing a block is cheaper than comparing its rules, and writing an unchanged rule into the inactive
    slot is harmless."""
    size, step = RULE_FORMAT.size, RULE_BLOCK * RULE_FORMAT.size
    wanted = b"".join(rules)
    if current is None:
        current = _libbpf.array_values(fd, size, len(rules))
    return [position for start in range(0, len(wanted), step)
            if current[start:start + step] != wanted[start:start + step]
            for position in range(start // size, min(len(rules), (start + step) // size))]


RULE_BLOCK = 16


MEMBARRIER_CMD_GLOBAL = 1
MEMBARRIER_SYSCALL = {"x86_64": 324, "aarch64": 283, "ppc64le": 365, "s390x": 356}


def wait_for_packets_in_flight():
    """Returns once no packet can still be using the slot that was active before the last switch.

    XDP programs run inside RCU read-side sections, and membarrier(MEMBARRIER_CMD_GLOBAL)
    returns only after an RCU grace period, so rewriting that slot afterwards is safe
    however soon this run follows the previous switch.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(MEMBARRIER_SYSCALL[os.uname().machine], MEMBARRIER_CMD_GLOBAL, 0) != 0:
        raise OSError(ctypes.get_errno(), "membarrier failed: cannot wait for an RCU grace period")


def _general_edits(fd, table):
    """The indexes of the dense port/protocol index whose entries differ (most rule changes leave the
    general rules alone: then one comparison of the whole array says so)."""
    current = _libbpf.array_values(fd, U32.size, GEN_ENTRIES)
    if current == array("I", table).tobytes():
        return []
    current = memoryview(current).cast("I").tolist()
    return [index for index, (now, first) in enumerate(zip(current, table)) if now != first]


def _prefix_edits(fd, desired):
    """(keys to delete, keys to write) that make a hash or LPM map hold desired."""
    info = _libbpf.map_info(fd)
    current = dict(_libbpf.map_items(fd, info["key_size"], info["value_size"], READ_CHUNK))
    return ([key for key in current if key not in desired],
            [key for key, value in desired.items() if current.get(key) != value])


def _percpu_sums(fd, index):
    cpus = _libbpf.num_possible_cpus()
    raw = _libbpf.map_lookup(fd, U32.pack(index), DATAREC_FORMAT.size * cpus)
    packets = bytes_ = 0
    for cpu in range(cpus):
        cpu_packets, cpu_bytes = DATAREC_FORMAT.unpack_from(raw, cpu * DATAREC_FORMAT.size)
        packets, bytes_ = packets + cpu_packets, bytes_ + cpu_bytes
    return {"packets": packets, "bytes": bytes_}


def read_stats(maps):
    """{reason: {packets, bytes}} summed over all possible CPUs."""
    return dict((reason, _percpu_sums(maps["xf_stats"], index)) for index, reason in enumerate(REASONS))


def read_hits(maps, counters):
    """[{packets, bytes}] per counter slot, in the order given."""
    return [_percpu_sums(maps["xf_hits"], counter) for counter in counters]


def reset_hits(maps, counters):
    """Zeroes the hit counters of these slots on every CPU, in one batch."""
    zero = b"\0" * DATAREC_FORMAT.size * _libbpf.num_possible_cpus()
    _libbpf.map_update_batch(maps["xf_hits"], [U32.pack(counter) for counter in counters], [zero] * len(counters))


def decode_event(raw):
    """A sampled drop from xf_events as a dict."""
    (timestamp, ifindex, position, counter, family, proto, action, reason, sport, dport, _padding,
     src, dst) = EVENT_FORMAT.unpack_from(raw)
    size = 4 if family == 4 else 16
    return {
        "timestamp": timestamp, "ifindex": ifindex,
        "position": None if position == NO_RULE else position,
        "counter": None if counter == NO_RULE else counter,
        "family": family, "proto": proto, "action": ACTION_NAMES[action], "reason": REASONS[reason],
        "sport": sport, "dport": dport,
        "src": str(ipaddress.ip_address(src[:size])) if family else None,
        "dst": str(ipaddress.ip_address(dst[:size])) if family else None,
    }
