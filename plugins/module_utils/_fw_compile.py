# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall's compiler: a rule set (packed xf_rule, in order) to the entries of one slot's maps (rules by
position, the general port/protocol index, the prefix chains, the slot meta), the positions rules keep across
changes, and the hit-counter slots they keep.

Layouts are _layout's; what the maps mean is in docs/RULES.md.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import ipaddress
import itertools
import struct
from collections import Counter, defaultdict, deque, namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors, _fw_hosts
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import PROTOCOL_NAMES, PROTOCOLS
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import (
    CHAIN, CHAIN_MAX, DST_SET, EMPTY_RULE, GEN_ENTRIES, GEN_PROTO, GEN_TCP, GEN_UDP, HAS_DST, HAS_PORT, HAS_PROTO,
    LIMITS_PER_PACKET, MAX_PREFIXES, MAX_RULES, NO_PREFIX, PORTS, PREFIX_MAPS, RATE_LIMIT, RULE, SLOT_META, SRC_SET, U32,
    XDP_ACTIONS)

COUNTER = RULE.offset["counter"]
COUNTER_END = COUNTER + U32.size


class CompileError(_errors.XdpfleetError, ValueError):
    pass


Compiled = namedtuple("Compiled", "default_action rules gen cond prefixes hosts meta counters")

# The compiler reads packed rules column by column (one tuple per field) through a struct format that skips the
# fields it does not need (pad bytes: unpacking them was a quarter of the work) and splits each address after its
# first 4 bytes, which are the whole of an IPv4 address, so that IPv4 needs no slicing.
COLUMNS_OF_FIELD = {"action": ("action",), "flags": ("flags",), "more": ("more",), "proto": ("protocol",), "family": ("family",), "src_len": ("src_len",),
                    "dst_len": ("dst_len",), "port_lo": ("low",), "port_hi": ("high",),
                    "src": ("source_head", "source_tail"), "dst": ("destination_head", "destination_tail")}


def _column_format():
    codes = []
    for field, code in RULE.fields:
        size = struct.calcsize("<" + code)
        if field not in COLUMNS_OF_FIELD:
            codes.append("%dx" % size)
        elif len(COLUMNS_OF_FIELD[field]) == 2:
            codes += ["4s", "%ds" % (size - 4)]
        else:
            codes.append(code)
    return struct.Struct("<" + "".join(codes))


Columns = namedtuple("Columns", [name for field, _code in RULE.fields for name in COLUMNS_OF_FIELD.get(field, ())])
COLUMN_FORMAT = _column_format()


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


def compile_packed(packed, default_action, counters=None, positions=None, sets=None):
    """The map entries of the rule set given as packed xf_rule (their counter fields are replaced).

    positions: the position of each rule (increasing; see place_rules), 0, 1, 2... when not given; the
    positions between them are holes, which hold an empty rule that no index refers to.
    sets: {set tag: AddressSet} of the sets the rules name.
    rules: [packed xf_rule by position]; gen: 131328 u32 (first position + 1); cond: the packed xf_chain of the
    general rules with further conditions (or a rate limit), which gen leaves out;
    prefixes: {short map name: {key: packed xf_chain}}; hosts: the IPv4 host tables (_fw_hosts.host_tables);
    meta: packed xf_slot_meta.
    """
    if len(packed) > MAX_RULES:
        raise CompileError("%d rules exceed the program's capacity of %d" % (len(packed), MAX_RULES))
    counters = list(range(len(packed))) if counters is None else counters
    positions = range(len(packed)) if positions is None else positions
    raw = b"".join(packed)
    columns = _columns(raw)
    prefixes = dict((name, {}) for name in PREFIX_MAPS)
    set_prefixes = _SetPrefixes(sets or {})
    for side in ("source", "destination"):
        if _may_find(columns, side):
            conditional = _by_position(_conditional(columns, side), positions, False)
            _compile_chains(columns, positions, conditional, side, prefixes, set_prefixes)
    _check_prefix_capacity(prefixes)
    general = [] if NO_PREFIX not in columns.src_len else [
        index for index, (src_len, dst_len, rule_flags) in
        enumerate(zip(columns.src_len, columns.dst_len, columns.flags))
        if src_len == NO_PREFIX and dst_len == NO_PREFIX and not rule_flags & (SRC_SET | DST_SET)]
    further = [index for index in general if columns.more[index] or columns.action[index] == RATE_LIMIT]
    cond = _conditional_chain([positions[index] for index in further])
    if RATE_LIMIT in columns.action:
        _check_limits_per_packet(columns, positions, further, prefixes)
    action = XDP_ACTIONS[default_action]
    rules = _by_position(_split_with_counters(raw, counters), positions, EMPTY_RULE)
    meta = SLOT_META.format.pack(action, len(rules), len(general), len(further),
                                 *(len(prefixes[name]) for name in PREFIX_MAPS))
    terminal = sorted(set(general) - set(further))
    return Compiled(action, rules, _compile_general(columns, positions, terminal), cond, prefixes,
                    _fw_hosts.host_tables(prefixes), meta, counters)


def _conditional_chain(positions):
    """The packed xf_chain of the general rules that the index cannot stand for: each needs its own check."""
    if len(positions) > CHAIN_MAX:
        raise CompileError(
            "%d rules without source or destination have conditions beyond protocol and port, or rate limits "
            "(positions %s...), more than the %d the program checks for every packet: give them a source or "
            "destination, or merge them" % (len(positions), ", ".join(map(str, positions[:CHAIN_MAX])), CHAIN_MAX))
    return CHAIN.format.pack(len(positions), *positions, *_CHAIN_PAD[len(positions):])


def _check_limits_per_packet(columns, positions, further, prefixes):
    """Refuses a rule set in which one packet could go through more rate limits than the program follows. For a
    packet of each protocol: the rate limits for it (or for any protocol) without addresses, plus the most on any
    one source chain, plus the most on any one destination chain."""
    protocol_of = dict((position, protocol if flags & HAS_PROTO else None)
                       for position, action, flags, protocol in zip(positions, columns.action, columns.flags,
                                                                    columns.protocol) if action == RATE_LIMIT)
    general = _limits_by_protocol([positions[index] for index in further], protocol_of)
    chains = [[_limits_by_protocol(_chain_positions(chain), protocol_of)
               for name in PREFIX_MAPS if name[0] == side for chain in prefixes[name].values()] for side in "sd"]
    for protocol in set(protocol_of.values()) | {None}:  # None: a protocol no rate limit names
        counts = [_for_protocol(general, protocol)] + [max([_for_protocol(found, protocol) for found in side] or [0])
                                                       for side in chains]
        if sum(counts) > LIMITS_PER_PACKET:
            raise CompileError(
                "%s packet could go through %d rate limits (%d without source or destination, %d by its source, %d "
                "by its destination), more than the %d the program follows: merge rate limits or narrow their "
                "matches" % ("a" if protocol is None else "a %s" % PROTOCOL_NAMES.get(protocol, protocol),
                             sum(counts), counts[0], counts[1], counts[2], LIMITS_PER_PACKET))


def _chain_positions(chain):
    return struct.unpack_from("<%dI" % U32.unpack_from(chain)[0], chain, U32.size)


def _limits_by_protocol(positions, protocol_of):
    """{protocol (None: any): the rate limits among these positions for it}."""
    return Counter(protocol_of[position] for position in positions if position in protocol_of)


def _for_protocol(found, protocol):
    """The rate limits of `found` a packet of this protocol meets (None: of a protocol no rate limit names)."""
    return found[None] + (found[protocol] if protocol is not None else 0)


PREFIX_MAP_WHAT = {"s": "source", "d": "destination", "4": "IPv4", "6": "IPv6", "h": "full-length", "t": "shorter"}


def _check_prefix_capacity(prefixes):
    """Refuses, before anything is written, a rule set whose prefixes (its sets' included) overflow a map."""
    for name, entries in prefixes.items():
        if len(entries) > MAX_PREFIXES:
            side, family, kind = (PREFIX_MAP_WHAT[letter] for letter in name)
            raise CompileError("%d %s %s %s prefixes exceed the %d entries of the program's prefix map for them: "
                               "shorten the address sets or merge their entries into shorter prefixes"
                               % (len(entries), kind, family, side, MAX_PREFIXES))


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
    size = RULE.size
    rules = bytearray(raw)
    counter_bytes = struct.pack("<%dI" % len(counters), *counters)
    for byte in range(U32.size):
        rules[COUNTER + byte::size] = counter_bytes[byte::U32.size]
    rules = bytes(rules)
    return [rules[offset:offset + size] for offset in range(0, len(rules), size)]


def patch_compiled(meta, rules, default_action, changed):
    """The Compiled of a rule set whose matches are those of the rule set with this meta, which the inactive
    slot's index maps already hold (see inactive_with_matches): rules and meta only. rules: the packed rules
    by position (holes included) of the rule set now, changed: {position: (packed rule, counter)}."""
    action = XDP_ACTIONS[default_action]
    meta = SLOT_META.format.pack(action, *SLOT_META.format.unpack(meta)[1:])
    rules = list(rules)
    for position, (packed, counter) in changed.items():
        rules[position] = packed[:COUNTER] + U32.pack(counter) + packed[COUNTER_END:]
    return Compiled(action, rules, None, None, None, None, meta, None)


IS_RATE_LIMIT = bytes(action == RATE_LIMIT for action in range(256))  # bytes.translate: an action to 1 or 0


def match_digest(raw):
    """Digest of concatenated packed rules without their counters, and of their actions only whether each is a
    rate limit: the index maps (gen, cond, prefixes) of two rule sets are the same when this and their counts
    are."""
    masked = bytearray(raw)
    count = len(masked) // RULE.size
    masked[0::RULE.size] = masked[0::RULE.size].translate(IS_RATE_LIMIT)
    for offset in range(COUNTER, COUNTER_END):
        masked[offset::RULE.size] = bytes(count)
    return hashlib.sha256(masked).digest()


def same_matches(packed, other):
    """True when two packed rules differ at most in counter and in a verdict (drop or pass) for another."""
    return packed[1:COUNTER] == other[1:COUNTER] and packed[COUNTER_END:] == other[COUNTER_END:] and \
        (packed[0] == RATE_LIMIT) == (other[0] == RATE_LIMIT)


def _may_find(columns, side):
    """False when no rule has a prefix or a set on `side`, so that the side finds none (told in C: a rule set of
    source prefixes alone has no destination chains to look for)."""
    lengths = columns.src_len if side == "source" else columns.dst_len
    set_flag = SRC_SET if side == "source" else DST_SET
    return lengths.count(NO_PREFIX) != len(lengths) or 1 in _flagged(columns, set_flag)


def _flagged(columns, mask):
    """One byte per rule: 1 when its flags have a bit of mask, else 0."""
    return bytes(columns.flags).translate(bytes(bool(flags & mask) for flags in range(256)))


def _conditional(columns, side):
    """Per rule, 1 unless it is a verdict for every packet its `side` prefix finds (0): it has no other
    condition and is not a rate limit (which lets packets within it go on). One byte per rule, found a column at
    a time in C."""
    conditions = HAS_PROTO | HAS_PORT | (HAS_DST if side == "source" else 0)
    return _bytes_or(_flagged(columns, conditions), bytes(map(bool, columns.more)),
                     bytes(columns.action).translate(IS_RATE_LIMIT))


def _bytes_or(*columns):
    """The bytewise OR of byte strings of one length."""
    ored = 0
    for column in columns:
        ored |= int.from_bytes(column, "little")
    return ored.to_bytes(len(columns[0]), "little")


_CHAIN_PAD = [0] * CHAIN_MAX
ONE_RULE_CHAIN = struct.Struct("<2I%dx" % (4 * (CHAIN_MAX - 1)))  # CHAIN of a one-rule chain


def _side_lengths(columns, side):
    """Per position, the prefix length by which `side` finds the rule, NO_PREFIX when it does not: every
    rule with a source prefix is found by it, a rule with a destination prefix alone (no source set either)
    by the destination."""
    if side == "source":
        return columns.src_len
    return [dst_len if src_len == NO_PREFIX and not flags & SRC_SET else NO_PREFIX
            for src_len, dst_len, flags in zip(columns.src_len, columns.dst_len, columns.flags)]


# The rules of one side, family and prefix length: `first` maps each address to the first rule's position,
# `more` the addresses that several rules have to the later positions (most rule sets have none).
PrefixGroup = namedtuple("PrefixGroup", "first more")


def _group_positions(group, address):
    """Positions of the rules of group with this address, in order."""
    first = group.first.get(address)
    return [] if first is None else [first] + group.more.get(address, [])


class _SetPrefixes:
    """The prefixes by which the rules naming a set are found: a rule with an address family finds only the
    set's prefixes of that family (a packet of the other family never matches its address)."""

    def __init__(self, sets):
        self.sets = sets
        self.packed = {}  # set tag: its prefixes as (family, length, packed address), made once per set

    def of_rule(self, family, tag):
        """[(family, length, packed address)] of the set with this tag that find a rule of this family."""
        if tag not in self.sets:
            raise CompileError("a rule names a set (tag %s) that the rule set does not define" % tag.hex())
        if tag not in self.packed:
            self.packed[tag] = self.sets[tag].prefixes()
        return [prefix for prefix in self.packed[tag] if family in (0, prefix[0])]


def _side_groups(columns, positions, side, set_prefixes):
    """{(family, prefix length): PrefixGroup} of the rules found by `side`, their sets' prefixes included."""
    by_length = dict((family, [PrefixGroup({}, {}) for length in range(width + 1)])
                     for family, width in ((4, 32), (6, 128)))
    ipv4, ipv6 = by_length[4], by_length[6]
    rows = zip(positions, columns.family, _side_lengths(columns, side),
               getattr(columns, side + "_head"), getattr(columns, side + "_tail"), columns.flags)
    set_flag = SRC_SET if side == "source" else DST_SET
    for position, family, length, head, tail, flags in rows:
        if length != NO_PREFIX:  # inline, not _add_to_group: this runs once per rule
            if family == 4:
                group, address = ipv4[length], head
            else:
                group, address = ipv6[length], head + tail
            if group.first.setdefault(address, position) != position:
                group.more.setdefault(address, []).append(position)
        elif flags & set_flag:
            for prefix_family, prefix_length, address in set_prefixes.of_rule(family, head + tail):
                _add_to_group(by_length[prefix_family][prefix_length], address, position)
    return dict(((family, length), group) for family, groups in by_length.items()
                for length, group in enumerate(groups) if group.first)


def _add_to_group(group, address, position):
    if group.first.setdefault(address, position) != position:
        group.more.setdefault(address, []).append(position)


def _compile_chains(columns, positions, conditional, side, prefixes, set_prefixes):
    """Each prefix of `side` gets the ordered positions of the rules whose prefix contains it, up to the first
    that is not conditional (by position)."""
    groups = _side_groups(columns, positions, side, set_prefixes)
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
            chain = _truncate(chain, conditional, side, version, prefixlen, int.from_bytes(raw, "big"))
            target[key_head + raw] = CHAIN.format.pack(len(chain), *chain, *_CHAIN_PAD[len(chain):])


def _covering_positions(groups, version, lengths, raw):
    """Positions of the rules whose prefix of one of these lengths contains the address raw."""
    width = len(raw) * 8
    address = int.from_bytes(raw, "big")
    return [position for length in lengths for position in _group_positions(
        groups[version, length], (address >> (width - length) << (width - length)).to_bytes(width // 8, "big"))]


def _truncate(chain, conditional, side, version, prefixlen, address):
    for index, position in enumerate(chain):
        if not conditional[position]:
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
    the indexes of the rules with neither source nor destination that take every packet of their protocol and
    port. A TCP or UDP port entry also holds its
    protocol's entry when that comes first, so that the program looks up one entry per packet: the port's
    when the packet has ports, the protocol's when it has none."""
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
    for number, base in ((PROTOCOLS["tcp"], GEN_TCP), (PROTOCOLS["udp"], GEN_UDP)):
        by_protocol = table[GEN_PROTO + number]
        if by_protocol:
            table[base:base + PORTS] = [min(entry or by_protocol, by_protocol) for entry in table[base:base + PORTS]]
    return table
