# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resource-module logic of xdp_rules: rule identity, the five states, diff lines, summary,
the SSH lockout guard and the desired-state file.

Rules here are normalised dicts (see _rules.parse_rules) with the keys of RULE_FIELDS; an absent
match is None. Nothing here touches the kernel or needs Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import contextlib
import gc
import hashlib
import itertools
import ipaddress
import json
import operator
import os
import tempfile

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf, _rules, _state

MATCH_FIELDS = ("source", "destination", "protocol", "port")
RULE_FIELDS = ("name", "action") + MATCH_FIELDS
STATES = ("merged", "replaced", "overridden", "deleted", "gathered")
STATE_DIR = "/etc/xdpfleet"
STATE_FILE_VERSION = 1
FULL_LISTS_UP_TO = 1000  # larger before/after lists are returned only with return_rules
UNCHANGED_BY_SAME_CONFIG = ("merged", "replaced", "overridden")
# A change touches few positions while not more than 1 in MOST_KEPT_RATIO of the rules differ from the
# current ones where they are: work that looks at the differing positions only is then worth it.
MOST_KEPT_RATIO = 8


class RulesetError(Exception):
    pass


def errors():
    """The exceptions a run reports as a task failure."""
    return (RulesetError, ValueError, OSError, _libbpf.LibbpfError, _state.StateError)


def rule_key(rule):
    """A rule's identity across runs: its name when it has one, else its match fields."""
    get = rule.get
    name = get("name")
    if name:
        return ("name", name)
    return ("match", get("source"), get("destination"), get("protocol"), get("port"))  # MATCH_FIELDS


def describe_key(key):
    if key[0] == "name":
        return "name %r" % key[1]
    return "match %s" % _match_text(dict(zip(MATCH_FIELDS, key[1:])))


def _identities(rules):
    """[rule_key(rule) for rule in rules], a field at a time."""
    names = list(map(operator.methodcaller("get", "name"), rules))
    fields = [map(operator.methodcaller("get", field), rules) for field in MATCH_FIELDS]
    matches = zip(itertools.repeat("match"), *fields)
    if not any(names):
        return list(matches)
    return [("name", name) if name else match for name, match in zip(names, matches)]


def check_unique(rules, what):
    keys = _identities(rules)
    if len(set(keys)) == len(keys):
        return
    seen = set()
    for key in keys:
        if key in seen:
            raise RulesetError("%s holds two rules with the same identity (%s); give them distinct names"
                               % (what, describe_key(key)))
        seen.add(key)


def _same_identities(rules, others):
    """True when both lists hold the same identities in the same order (rules that are equal have)."""
    return len(rules) == len(others) and all(
        rule_key(rule) == rule_key(other) for rule, other in zip(rules, others) if rule != other)


# --- the five states --------------------------------------------------------


def _merge_fields(old, new):
    """merged: the fields given in new win, the others keep their old value."""
    merged = dict(old)
    merged.update((field, value) for field, value in new.items() if value is not None)
    return merged


def _replace_fields(old, new):
    return dict(new)


def _insert_new(result, config, combine):
    """Updates rules of result that config names (in place) and inserts the others.

    A new rule goes right after the rule that precedes it in config; a new rule at the head of
    config goes before the first config rule that already exists, or at the end when none does.
    """
    position = {rule_key(rule): index for index, rule in enumerate(result)}
    placed = []  # (result index, rule) for every config rule, in config order
    for rule in config:
        key = rule_key(rule)
        if key in position:
            index = position[key]
            result[index] = combine(result[index], rule)
            placed.append((index, None))
        else:
            placed.append((None, rule))
    return _splice(result, placed)


def _splice(result, placed):
    after = {}  # index of existing rule -> new rules to put right after it
    head = []   # new rules before any existing config rule
    anchor = None
    for index, rule in placed:
        if rule is None:
            anchor = index
        elif anchor is None:
            head.append(rule)
        else:
            after.setdefault(anchor, []).append(rule)
    first_existing = next((index for index, rule in placed if rule is None), len(result))
    spliced = []
    for index, rule in enumerate(result):
        if index == first_existing:
            spliced.extend(head)
        spliced.append(rule)
        spliced.extend(after.get(index, ()))
    if first_existing == len(result):
        spliced.extend(head)
    return spliced


def desired_rules(state, have, config, have_unique=False):
    """The ordered rule list a state produces from the current rules `have` and `config`;
    have_unique: have is known to hold no identity twice."""
    if state == "gathered":
        return list(have)
    if state == "overridden":
        if not (have_unique and _same_identities(have, config)):
            check_unique(config, "config")
        return list(config)
    if state == "deleted":
        if not config:
            return []
        doomed = set(rule_key(rule) for rule in config)
        return [rule for rule in have if rule_key(rule) not in doomed]
    check_unique(config, "config")
    combine = _merge_fields if state == "merged" else _replace_fields
    result = _insert_new(list(have), config, combine)
    check_unique(result, "the resulting rule set")
    return result


# --- comparison: summary and diff lines ------------------------------------------


def _match_text(rule):
    words = [rule.get("protocol") or "ip", "from", rule.get("source") or "any",
             "to", rule.get("destination") or "any"]
    if rule.get("port") is not None:
        words += ["port", str(rule["port"])]
    return " ".join(words)


def rule_line(rule):
    """One line per rule, as diff mode shows it: `drop tcp from any to 198.18.0.0/24 port 22 (ssh)`."""
    text = "%s %s" % (rule["action"], _match_text(rule))
    if rule.get("name"):
        text += " (%s)" % rule["name"]
    return text


def _longest_increasing(sequence):
    """Indexes into sequence of one longest strictly increasing subsequence."""
    if all(map(operator.lt, sequence, sequence[1:])):  # nothing moved
        return set(range(len(sequence)))
    tails, tail_index, previous = [], [], [None] * len(sequence)
    for index, value in enumerate(sequence):
        slot = bisect.bisect_left(tails, value)
        if slot:
            previous[index] = tail_index[slot - 1]
        if slot == len(tails):
            tails.append(value)
            tail_index.append(index)
        else:
            tails[slot] = value
            tail_index[slot] = index
    chain, index = set(), tail_index[-1] if tail_index else None
    while index is not None:
        chain.add(index)
        index = previous[index]
    return chain


def _contents(rules):
    """The rule entries as hashable values (equal entries give equal values); TypeError for an item that is
    not a dict or holds a value that cannot be hashed."""
    return map(tuple, map(dict.items, rules))


RESYNC_WINDOW = 8  # rules looked ahead for, where two lists stop being equal


def _common_run(before, start, after, at):
    """How many rules before[start:] and after[at:] have equal, from their first."""
    unequal = map(operator.ne, map(before.__getitem__, range(start, len(before))),
                  map(after.__getitem__, range(at, len(after))))
    return next(itertools.compress(itertools.count(), unequal), min(len(before) - start, len(after) - at))


def equal_pairs(before, after):
    """For each item of after, the index of an equal rule of before or None, one to one. Walks both lists
    along their equal runs, stepping over a few rules removed or added where they part, so that lists that
    mostly hold the same rules in the same order cost a comparison per rule; the rules left over are paired
    by hashing (those that moved)."""
    kept = [None] * len(after)
    start = at = 0
    while start < len(before) and at < len(after):
        run = _common_run(before, start, after, at)
        kept[at:at + run] = range(start, start + run)
        start, at = start + run, at + run
        if start == len(before) or at == len(after):
            break
        removed = next((step for step in range(1, RESYNC_WINDOW)
                        if start + step < len(before) and before[start + step] == after[at]), 0)
        added = 0 if removed else next((step for step in range(1, RESYNC_WINDOW)
                                        if at + step < len(after) and after[at + step] == before[start]), 0)
        if removed or added:
            start, at = start + removed, at + added
        else:  # replaced where it is
            start, at = start + 1, at + 1
    _pair_moved(before, after, kept)
    return kept


def _pair_moved(before, after, kept):
    paired = set(kept)
    left = [index for index in range(len(before)) if index not in paired]
    unpaired = [position for position, index in enumerate(kept) if index is None]
    try:
        index_of = dict(zip(_contents([before[index] for index in left]), left))
        found = list(map(index_of.pop, _contents([after[position] for position in unpaired]),
                         itertools.repeat(None)))
    except TypeError:  # an item that is not a dict or holds what cannot be hashed: left to the caller
        return
    for position, index in zip(unpaired, found):
        kept[position] = index


def pair_rules(before, after, equal_kept=None):
    """For each rule of after, (index in before of the rule with its identity or None for a new rule, True
    when the two are equal); equal rules are paired by equal_pairs (equal_kept: its result, when known),
    the others by their identity."""
    kept = list(equal_pairs(before, after) if equal_kept is None else equal_kept)
    equal = [index is not None for index in kept]
    used = set(kept)
    by_key = dict((rule_key(before[index]), index) for index in range(len(before)) if index not in used)
    for position in [position for position, index in enumerate(kept) if index is None]:
        kept[position] = by_key.pop(rule_key(after[position]), None)
    return list(zip(kept, equal))


def compare(before, after, with_lines=True, pairs=None):
    """Summary counts and diff lines (empty unless with_lines) of two ordered rule lists; pairs:
    pair_rules(before, after), when known.

    A kept rule (same identity) counts as changed when its fields differ or it moved relative to
    the other kept rules; the fewest such moves are reported.
    """
    if before == after:
        return {"added": 0, "removed": 0, "changed": 0}, []
    if len(before) == len(after) and pairs is None:
        in_place = _changed_in_place(before, after, with_lines)
        if in_place is not None:
            return in_place
    pairs = pair_rules(before, after) if pairs is None else pairs
    kept = [index for index, equal in pairs if index is not None]
    in_order = _longest_increasing(kept)
    paired = set(kept)
    lines = ["- " + rule_line(rule) for index, rule in enumerate(before) if index not in paired] if with_lines else []
    added = changed = kept_index = 0
    for position, (rule, (index, equal)) in enumerate(zip(after, pairs)):
        if index is None:
            added += 1
            change = ("+ %s (at %d)", rule)
        else:
            old_rule = before[index]
            moved = kept_index not in in_order
            kept_index += 1
            equal = equal or old_rule == rule
            if equal and not moved:
                continue
            changed += 1
            if not equal:
                lines += ["- " + rule_line(old_rule)] if with_lines else []
                change = ("+ %s (at %d)", rule)
            else:
                change = ("~ %s (moved to %d)", rule)
        if with_lines:
            lines.append(change[0] % (rule_line(change[1]), position + 1))
    return {"added": added, "removed": len(before) - len(paired), "changed": changed}, lines


def differing_in_place(before, after):
    """The positions at which two lists of the same length differ, when the change looks made in place: few
    positions (not more than 1 in MOST_KEPT_RATIO), or rules that all keep their identity where they are;
    else None (rules removed before others and added elsewhere shift every later position)."""
    if len(before) != len(after):
        return None
    differing = [position for position, (old, new) in enumerate(zip(before, after)) if old != new]
    if len(differing) <= len(before) // MOST_KEPT_RATIO or \
            all(rule_key(before[position]) == rule_key(after[position]) for position in differing):
        return differing
    return None


def _keys_in_place(before, after):
    """[(position, identity in before, identity in after)] of the positions at which two lists of the same
    length differ; None as soon as one identity is found at two of them (a rule moved: rules removed
    before others shift every later one, which shows at the second or third position that differs)."""
    keys, old_keys, new_keys = [], set(), set()
    for position, (old_rule, new_rule) in enumerate(zip(before, after)):
        if old_rule == new_rule:
            continue
        old, new = rule_key(old_rule), rule_key(new_rule)
        if new in old_keys or old in new_keys:
            return None
        old_keys.add(old)
        new_keys.add(new)
        keys.append((position, old, new))
    return keys


def _changed_in_place(before, after, with_lines):
    """compare's result when no kept rule moved: each rule that differs either kept its identity and
    position or gave its position to a rule new to the set (else None). Found by keying only the rules
    that differ: the others are equal, so a rule new at a differing position is nowhere in before and
    a rule gone from one is nowhere in after (identities are unique in each list)."""
    keys = _keys_in_place(before, after)
    if keys is None:
        return None
    replaced = [position for position, old, new in keys if old != new]
    summary = {"added": len(replaced), "removed": len(replaced), "changed": len(keys) - len(replaced)}
    if not with_lines:
        return summary, []
    lines = ["- " + rule_line(before[position]) for position in replaced]
    for position, old, new in keys:
        if old == new:
            lines.append("- " + rule_line(before[position]))
        lines.append("+ %s (at %d)" % (rule_line(after[position]), position + 1))
    return summary, lines


def setting_lines(before, after):
    """Diff lines for the scalar settings (default_action, sampling) that differ."""
    return ["~ %s: %s -> %s" % (name, before.get(name), after[name])
            for name in sorted(after) if before.get(name) != after[name]]


# --- lockout guard ------------------------------------------------------------


def ssh_packet(environ):
    """The packet the SSH client sends to this host, from SSH_CONNECTION; None outside SSH."""
    fields = (environ.get("SSH_CONNECTION") or "").split()
    if len(fields) != 4:
        return None
    client, client_port, server, server_port = fields
    return {"source": client, "destination": server, "protocol": "tcp",
            "source_port": int(client_port), "port": int(server_port)}


def lockout(entries, rules, default_action, packet, classify):
    """Why the rule set would drop packet: a text naming the rule, or None when it passes.

    rules are the entries in the form classify takes; classify(rules, default_action, packet) -> (action, index of the
    deciding rule or None).
    """
    if packet is None:
        return None
    action, index = classify(rules, default_action, packet)
    if action != "drop":
        return None
    culprit = "the default action drop" if index is None else \
        "rule %d (%s)" % (index + 1, rule_line(entries[index]))
    return ("%s would drop this SSH connection (tcp from %s port %d to %s port %d); "
            "set allow_lockout: true to apply it anyway"
            % (culprit, packet["source"], packet["source_port"], packet["destination"], packet["port"]))


# --- desired state on disk ------------------------------------------------------


def state_path(interface, state_dir=STATE_DIR):
    return os.path.join(state_dir, "%s.json" % interface)


def read_state(interface, state_dir=STATE_DIR):
    """The desired state last written for interface, or None."""
    try:
        with open(state_path(interface, state_dir)) as handle:
            return json.load(handle)
    except IOError:
        return None
    except ValueError as error:
        raise RulesetError("%s is not valid JSON: %s" % (state_path(interface, state_dir), error))


def write_state(interface, document, state_dir=STATE_DIR, rules_json=None):
    """Writes the desired state so that a reader sees the old file or the new one, never a part;
    rules_json is entries_json(document["rules"]) when that is known.

    Beside it goes a small index of the named rules by position, so that facts can name the
    rules they report without parsing a desired state of 100,000 rules.
    """
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, 0o755)
    names = {str(position): entry["name"] for position, entry in enumerate(document["rules"]) if entry.get("name")}
    _write_atomically(names_path(interface, state_dir), _compact(dict(digest=document["digest"], names=names)))
    others = _compact(dict((key, value) for key, value in document.items() if key != "rules"),
                      version=STATE_FILE_VERSION)
    rules_json = entries_json(document["rules"]) if rules_json is None else rules_json
    _write_atomically(state_path(interface, state_dir), '{"rules":%s,%s' % (rules_json, others[1:]))


def _compact(document, **more):
    return json.dumps(dict(document, **more), separators=(",", ":"))


def names_path(interface, state_dir=STATE_DIR):
    return os.path.join(state_dir, "%s.names" % interface)


def read_names(interface, digest, state_dir=STATE_DIR):
    """{position: name} of the named rules, when the index describes the rule set with this digest."""
    try:
        with open(names_path(interface, state_dir)) as handle:
            index = json.load(handle)
    except (IOError, ValueError):
        return {}
    return dict((int(position), name) for position, name in index["names"].items()) \
        if index.get("digest") == digest else {}


def _write_atomically(target, text):
    state_dir = os.path.dirname(target)
    descriptor, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(target), dir=state_dir)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.rename(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# --- input: config items to canonical entries ------------------------------------------------
# An entry is a rule in Rule.to_dict() form plus its optional `name`; canonical values are a
# fixed point of _rules.parse_rule, which lets items already in canonical form skip re-parsing.

ITEM_KEYS = frozenset(RULE_FIELDS)


def entry_values(entry):
    """The canonical (action, source, destination, protocol, port) of an entry."""
    return tuple(map(entry.get, _rules.RULE_KEYS))


def _raw_values(item):
    values = entry_values(item)
    # bool is an int in Python: keep True from passing for the canonical port or protocol 1
    if isinstance(values[3], bool) or isinstance(values[4], bool):
        return None
    return values


def _is_entry(item, entry):
    """True when item equals the entry: in a list that mostly repeats the current rules, one dict comparison
    instead of checking each field. 1 == True, so the values a bool could equal are left to the full check."""
    return item == entry and entry.get("port") != 1 and entry.get("protocol") != 0


def _equals_a_bool(entries):
    """True when an entry has a value that True or False equals (port 1, protocol 0): then an item equal to
    it may not be the entry (see _is_entry)."""
    return 1 in map(operator.methodcaller("get", "port"), entries) or \
        0 in map(operator.methodcaller("get", "protocol"), entries)


def _entry(rule, name):
    entry = rule.to_dict()
    if name:
        entry["name"] = name
    return entry


class Entries:
    """Turns config items into entries; knows the packed xf_rule of every canonical value seen."""

    def __init__(self):
        self.known = set()
        self.packed_of = {}
        self.pending = []
        self.remembered = []  # the entries last remembered, by position
        self.items_paired = None  # (items, equal_pairs(remembered, items)) of the last from_items
        self._remembered_packed = self._remembered_values = None

    def remember(self, entries, packed):
        """entries are canonical; packed() gives their packed rules, only called when one is needed."""
        self.remembered, self._remembered_packed, self._remembered_values = entries, packed, None

    def remembered_values(self):
        """The values of the remembered entries, which are known from then on."""
        if self._remembered_values is None:
            self._remembered_values = list(map(entry_values, self.remembered))
            self.known.update(self._remembered_values)
            self.pending.append((self._remembered_values, self._remembered_packed))
        return self._remembered_values

    def from_items(self, items, default_action=None):
        """Validated entries of items; default_action fills a missing action (state deleted)."""
        if not isinstance(items, list):
            raise _rules.RuleError(["config: must be a list of rules"])
        remembered = self.remembered
        pairs = equal_pairs(remembered, items)
        self.items_paired = items, pairs
        if _equals_a_bool(remembered):
            entries = [None if known is None or not _is_entry(item, remembered[known]) else item
                       for item, known in zip(items, pairs)]
        else:
            entries = [None if known is None else item for item, known in zip(items, pairs)]
        misplaced = [index for index, entry in enumerate(entries) if entry is None]
        if len(misplaced) > len(remembered) // MOST_KEPT_RATIO:
            self.remembered_values()  # knowing them is cheaper than checking every misplaced item
        errors = []
        for index in misplaced:
            try:
                entries[index] = self._from_item(items[index], index, default_action)
            except _rules.RuleError as error:
                errors.extend(error.errors)
        if errors:
            raise _rules.RuleError(errors)
        return entries

    def equal_pairs_of(self, rules):
        """equal_pairs(remembered, rules) when from_items found it already: rules are its items."""
        items, pairs = self.items_paired or ((), None)
        same = len(rules) == len(items) and all(map(operator.is_, rules, items))
        return pairs if same else None

    def _from_item(self, item, index, default_action):
        if not isinstance(item, dict):
            raise _rules.RuleError(["config[%d]: must be a dict" % index])
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise _rules.RuleError(["config[%d].name: must be a string" % index])
        if default_action and item.get("action") is None:
            item = dict(item, action=default_action)
        values = _raw_values(item)
        known = values in self.known and ITEM_KEYS.issuperset(item)
        if not known and ITEM_KEYS.issuperset(item) and values is not None:
            packed = _rules.pack_canonical(values)
            if packed is not None:  # already canonical: valid as it is
                self.known.add(values)
                self.packed_of[values] = packed
                known = True
        if known and item.get("name", True) and None not in item.values():
            return item  # already an entry (entries are never changed in place)
        if known:
            entry = dict((key, value) for key, value in item.items() if value is not None and key != "name")
        else:
            rule = _rules.parse_rule(dict((k, v) for k, v in item.items() if k != "name"), "config[%d]" % index)
            entry = _entry(rule, None)
            self.known.add(entry_values(entry))
            self.packed_of[entry_values(entry)] = _rules.pack_rule(rule)
        if name:
            entry["name"] = name
        return entry

    def packed(self, entries, values, positions=None):
        """The packed xf_rule of each entry (their counter fields are not meaningful); values are theirs,
        positions theirs in the rule set when they are not all of it."""
        packed_of = self.packed_of
        if not packed_of.keys() >= set(values):
            self.remembered_values()
            self._resolve_pending()
        positions = range(len(entries)) if positions is None else positions
        return [packed_of[value] if value in packed_of else self._parse(entry, position)
                for position, entry, value in zip(positions, entries, values)]

    def _parse(self, entry, index):
        rule = _rules.parse_rule(dict((k, v) for k, v in entry.items() if k != "name"), "rule %d" % (index + 1))
        self.packed_of[entry_values(entry)] = _rules.pack_rule(rule)
        return self.packed_of[entry_values(entry)]

    def _resolve_pending(self):
        for values, packed in self.pending:
            for value, rule in zip(values, packed()):
                self.packed_of.setdefault(value, rule)
        self.pending = []


# --- kernel: the firewall's pinned maps -------------------------------------------------------

MAP_NAMES = ("xf_config", "xf_hits") + tuple(
    "xf_%s_%d" % (name, slot) for slot in (0, 1) for name in _rules.RULESET_MAPS)


@contextlib.contextmanager
def pinned_maps(pin_dir):
    """{map name: fd} of the firewall maps pinned in pin_dir, closed on exit."""
    maps = {}
    try:
        for name in MAP_NAMES:
            path = os.path.join(pin_dir, name)
            if not os.path.exists(path):
                raise RulesetError("%s is missing: the xdpfleet firewall is not attached with its maps pinned in %s "
                                   "(attach it with xdpfleet.xdp.xdp_program)" % (path, pin_dir))
            maps[name] = _libbpf.obj_get(path)
        yield maps
    finally:
        for fd in maps.values():
            os.close(fd)


class KernelRuleset:
    """The rule set the program uses now: the active slot's meta and packed rules. Rules are numbered 0, 1,
    2... in order; each has a position in the rules map, increasing with the number but with holes where
    rules were removed (see _rules.place_rules)."""

    def __init__(self, maps):
        self.maps = maps
        self.active, self.sampling, metas = _rules.read_config(maps)
        self.meta = metas[self.active]
        code, span = _rules.META_FORMAT.unpack_from(self.meta)[:2]
        self.default_action = _rules.ACTION_NAMES.get(code, "pass") if code else "pass"
        self.raw = _libbpf.array_values(maps["xf_rules_%d" % self.active], _rules.RULE_FORMAT.size, span)
        actions = self.raw[::_rules.RULE_FORMAT.size]  # 0 only in holes
        self.positions = range(span) if 0 not in actions else [
            position for position, action in enumerate(actions) if action]
        self._packed = self._decoded = None

    def __len__(self):
        return len(self.positions)

    def by_position(self):
        """The packed xf_rule at each position, holes included."""
        size = _rules.RULE_FORMAT.size
        return [self.raw[offset:offset + size] for offset in range(0, len(self.raw), size)]

    @property
    def packed(self):
        """The packed xf_rule of each rule."""
        if self._packed is None:
            size, raw = _rules.RULE_FORMAT.size, self.raw
            self._packed = [raw[position * size:(position + 1) * size] for position in self.positions]
        return self._packed

    def rule_at(self, number):
        """(Rule, hit-counter slot) of one rule."""
        return decode_rule(self.packed[number])

    def number_at(self, position):
        """The number of the rule at this position of the rules map, None for none."""
        number = bisect.bisect_left(self.positions, position)
        return number if number < len(self.positions) and self.positions[number] == position else None

    @property
    def digest(self):
        return ruleset_digest(self.meta, [self.raw])

    def decoded(self):
        """[(Rule, hit-counter slot)] by number."""
        if self._decoded is None:
            self._decoded = [decode_rule(packed) for packed in self.packed]
        return self._decoded

    def rules(self):
        return [pair[0] for pair in self.decoded()]

    def entries(self):
        """The rules as canonical entries (no names: those are not in the kernel)."""
        return [_rules.canonical_of_packed(packed) for packed in self.packed]

    def counters(self):
        """The hit-counter slot of each rule, read straight from the packed array."""
        words = memoryview(self.raw).cast("I")[RULE_COUNTER_WORD::_rules.RULE_FORMAT.size // 4]
        if isinstance(self.positions, range):
            return words.tolist()
        return list(map(words.__getitem__, self.positions))


RULE_COUNTER_WORD = 3  # xf_rule.counter is the fourth 32-bit word


def entries_json(entries):
    """A list of rule entries as canonical JSON text (so 1 and true, or 22 and "22", differ); None if not JSON."""
    try:
        return json.dumps(entries, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def entries_digest(entries):
    """Digest of entries_json(entries); None if not JSON."""
    return json_digest(entries_json(entries))


def json_digest(text):
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def ruleset_digest(meta, packed_rules):
    digest = hashlib.sha256(meta)
    digest.update(b"".join(packed_rules))
    return digest.hexdigest()


def _network(family, packed, prefixlen):
    if prefixlen == _rules.NO_PREFIX:
        return None
    if family == 4:
        return ipaddress.IPv4Network((int.from_bytes(packed[:4], "big"), prefixlen))
    return ipaddress.IPv6Network((int.from_bytes(packed, "big"), prefixlen))


def decode_rule(packed):
    """(Rule, counter) from a packed xf_rule: the inverse of _rules' packing."""
    (action, flags, protocol, family, src_len, dst_len, _reserved, low, high, counter,
     source, destination, _mask) = _rules.RULE_FORMAT.unpack(packed)
    rule = _rules.Rule(
        _rules.ACTION_NAMES[action], _network(family, source, src_len), _network(family, destination, dst_len),
        protocol if flags & _rules.HAS_PROTO else None, (low, high) if flags & _rules.HAS_PORT else None)
    return rule, counter


# --- one run of the module ----------------------------------------------------------------------


class Outcome:
    """What a run found and decided; `result` is the module's return value."""

    def __init__(self, before, after, settings_before, settings_after, with_lines, equal_kept=None):
        self.before, self.after = before, after
        self.settings_before, self.settings_after = settings_before, settings_after
        # after's rules either differ from before's at a few positions (or keep their identities where they are):
        # differing, those positions; or pairs (pair_rules) tell which rule of before each rule of after is
        self.differing = differing_in_place(before, after)
        self.pairs = pair_rules(before, after, equal_kept) if self.differing is None else None
        # with pairs: the numbers of the rules of after that equal no rule of before
        self.unequal = None if self.pairs is None else [
            number for number, (index, equal) in enumerate(self.pairs) if not equal]
        self.summary, self.lines = compare(before, after, with_lines, self.pairs)
        self.lines = setting_lines(settings_before, settings_after) + self.lines
        self.ruleset_changed = before != after or \
            settings_before["default_action"] != settings_after["default_action"]
        self.changed = self.ruleset_changed or settings_before != settings_after
        # when the rule set changes: the packed rules of after; with differing, in_place: (those rule numbers,
        # values of before there, values of after there)
        self.packed = self.in_place = None
        self.after_json = None  # entries_json(after), when known

    def result(self, interface, state, diff, return_rules=False):
        """The module result; before/after are left out when either has more than FULL_LISTS_UP_TO rules, unless
        return_rules (moving 100,000 rules through Ansible's result handling costs seconds)."""
        full = return_rules or max(len(self.before), len(self.after)) <= FULL_LISTS_UP_TO
        result = dict(changed=self.changed, interface=interface, summary=self.summary,
                      rule_count={"before": len(self.before), "after": len(self.after)}, **self.settings_after)
        if full:
            result["before"] = self.before
        if state == "gathered":
            result["gathered"] = self.before
        elif self.changed and full:
            result["after"] = self.after
        if diff:
            result["diff"] = {"prepared": "\n".join(self.lines)}
        return result


def _have(kernel, stored, entries):
    """(The current entries, position by position those of the kernel; True when they come from the stored
    desired state, checked for twins when it was written): the stored desired state when the kernel holds
    exactly what it recorded, else the kernel's rules (their names are not in the kernel)."""
    from_state = bool(stored and stored.get("digest") == kernel.digest)
    have = stored["rules"] if from_state else kernel.entries()
    entries.remember(have, lambda: kernel.packed)
    return have, from_state


def _settings(request, kernel):
    sampling = request.get("sampling")
    if sampling is not None and not 0 <= sampling <= 0xFFFFFFFF:
        raise RulesetError("sampling: %r is not 0 (off) or N for 1 in N drops (up to 2^32-1)" % (sampling,))
    return {"default_action": request.get("default_action") or kernel.default_action,
            "sampling": kernel.sampling if request.get("sampling") is None else request["sampling"]}


def _same_as_stored(request, kernel, stored, config_json):
    """True when config is exactly the stored canonical rules the kernel holds, so that the state keeps them as
    they are: decided by digests, before any per-rule work."""
    return bool(request["state"] in UNCHANGED_BY_SAME_CONFIG and stored and stored.get("digest") == kernel.digest
                and stored.get("rules_digest") is not None
                and stored["rules_digest"] == json_digest(config_json))


def config_text(config):
    """config as JSON text: the text itself when the action plugin sent one (it writes entries_json's
    form, so canonical rules give the digest stored for them, with no parsing or writing of JSON here)."""
    return config if isinstance(config, str) else entries_json(config)


def config_items(config):
    """config as the module receives it: a list, or its JSON text (what the action plugin sends)."""
    if not isinstance(config, str):
        return config
    try:
        return json.loads(config)
    except ValueError as error:
        raise _rules.RuleError(["config: not a JSON list of rules (%s)" % error])


def plan(request, kernel, stored):
    """The Outcome of request against the kernel's rule set and the stored desired state."""
    state = request["state"]
    settings_before = {"default_action": kernel.default_action, "sampling": kernel.sampling}
    settings_after = settings_before if state == "gathered" else _settings(request, kernel)
    diff = bool(request.get("diff"))
    config_json = config_text(request.get("config")) if state in UNCHANGED_BY_SAME_CONFIG else None
    if settings_after["default_action"] == kernel.default_action and \
            _same_as_stored(request, kernel, stored, config_json):
        return Outcome(stored["rules"], stored["rules"], settings_before, settings_after, diff)
    config = config_items(request.get("config")) or []
    entries = Entries()
    have, have_unique = _have(kernel, stored, entries)
    want = entries.from_items(config, "drop" if state == "deleted" else None)
    after = desired_rules(state, have, want, have_unique)
    outcome = Outcome(have, after, settings_before, settings_after, diff, entries.equal_pairs_of(after))
    if outcome.ruleset_changed:
        _pack(outcome, kernel, entries)
    if len(after) == len(config) and all(map(operator.is_, after, config)):
        outcome.after_json = config_json  # the items are the entries: their JSON is known
    return outcome


def _pack(outcome, kernel, entries):
    """Sets outcome's packed rules: those of rules equal to one the kernel holds are taken from it, only the
    others are packed."""
    before, after = outcome.before, outcome.after
    if outcome.differing is None:
        numbers = outcome.unequal
        outcome.packed = [kernel.packed[index] if equal else None for index, equal in outcome.pairs]
    else:
        numbers = outcome.differing
        outcome.packed = list(kernel.packed)
    changed = [after[number] for number in numbers]
    values = list(map(entry_values, changed))
    for number, packed in zip(numbers, entries.packed(changed, values, numbers)):
        outcome.packed[number] = packed
    if outcome.differing is not None:
        outcome.in_place = (numbers, [entry_values(before[number]) for number in numbers], values)


def check_lockout(outcome, environ, allow_lockout):
    if allow_lockout or not outcome.ruleset_changed:
        return
    packet = ssh_packet(environ)
    if packet is None:
        return

    def classify(packed, default_action, packet):
        position = _rules.first_match(packed, _rules.Packet.ip(
            packet["source"], packet["destination"], _rules.PROTOCOLS["tcp"], packet["port"]))
        if position is None:
            return default_action, None
        return _rules.canonical_of_packed(packed[position])["action"], position

    reason = lockout(outcome.after, outcome.packed, outcome.settings_after["default_action"], packet, classify)
    if reason:
        raise RulesetError(reason)


def apply(maps, kernel, outcome):
    """Makes the kernel hold outcome's rule set and settings; returns the digest of the active rule set."""
    digest = kernel.digest
    if outcome.ruleset_changed:
        digest = switch_ruleset(maps, kernel, outcome)
    if outcome.settings_before["sampling"] != outcome.settings_after["sampling"]:
        _rules.set_sample_rate(maps, outcome.settings_after["sampling"])
    return digest


def switch_ruleset(maps, kernel, outcome):
    """Writes the new rule set into the inactive slot and switches to it; kept rules keep their counters.

    When every rule keeps its match (only actions change) and the inactive slot holds the index maps of the
    current rules, only the rules are written: the work is that of the change, not of the rule set.
    """
    counters, fresh = _counters(kernel, outcome)
    default_action = outcome.settings_after["default_action"]
    inactive = _keeps_matches(kernel, outcome) and _rules.inactive_with_matches(maps, kernel.raw, kernel.meta)
    if inactive:
        changed = dict((kernel.positions[number], (outcome.packed[number], counters[number]))
                       for number in outcome.in_place[0])
        compiled = _rules.patch_compiled(kernel.meta, kernel.by_position(), default_action, changed)
        slot, inactive_rules = inactive
        _rules.apply_ruleset(maps, compiled, fresh, {slot: inactive_rules, 1 - slot: kernel.raw})
    else:
        compiled = _rules.compile_packed(outcome.packed, default_action, counters, _positions(kernel, outcome))
        _rules.apply_ruleset(maps, compiled, fresh, {kernel.active: kernel.raw})
    return ruleset_digest(compiled.meta, compiled.rules)


def _positions(kernel, outcome):
    """Where each rule goes in the rules map: a rule equal to one the kernel holds stays where it is, unless
    it moved past other kept rules (see _rules.place_rules)."""
    if outcome.pairs is None:  # the rules keep their numbers
        return kernel.positions
    kept = [index if equal else None for index, equal in outcome.pairs]
    numbers = [number for number, index in enumerate(kept) if index is not None]
    if not numbers:
        return range(len(kept))
    in_order = _longest_increasing([kept[number] for number in numbers])
    anchors = [None] * len(kept)
    for order, number in enumerate(numbers):
        if order in in_order:
            anchors[number] = kernel.positions[kept[number]]
    return _rules.place_rules(anchors)


def _counters(kernel, outcome):
    """(counter slot of each rule, slots of new rules): a rule equal to one the kernel holds keeps its slot;
    the others are told apart by their canonical values (hashing those is cheaper than hashing Rule
    objects), so that a rule renamed or moved keeps its slot too."""
    current = kernel.counters()
    if outcome.in_place is None:
        pairs = outcome.pairs
        paired = set(index for index, equal in pairs if equal)
        left = [index for index in range(len(current)) if index not in paired]
        numbers = outcome.unequal
        before_values = [entry_values(outcome.before[index]) for index in left]
        after_values = [entry_values(outcome.after[number]) for number in numbers]
        previous = [current[index] for index in left]
        counters = [current[index] if equal else None for index, equal in pairs]
    else:
        numbers, before_values, after_values = outcome.in_place
        previous = [current[number] for number in numbers]
        counters = list(current)
    changed, fresh = _rules.assign_counters(after_values, before_values, previous, current)
    for number, counter in zip(numbers, changed):
        counters[number] = counter
    return counters, fresh


def _keeps_matches(kernel, outcome):
    if outcome.in_place is None:
        return False
    packed, current = outcome.packed, kernel.packed
    return all(_rules.same_matches(packed[position], current[position]) for position in outcome.in_place[0])


@contextlib.contextmanager
def _cyclic_gc_paused():
    """A 100,000-rule run allocates millions of dicts, tuples and bytes, none of them in a reference cycle
    (reference counting frees them all), and the cyclic collector's passes over them took 10-15% of it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def run(request, check_mode=False, environ=None, state_dir=STATE_DIR):
    """One xdp_rules task on this host; returns the module result (raises RulesetError/RuleError)."""
    interface = request["interface"]
    pin_dir = request.get("pin_dir") or _state.default_pin_dir(interface)
    with _cyclic_gc_paused(), _state.host_lock(interface), pinned_maps(pin_dir) as maps:
        kernel = KernelRuleset(maps)
        stored = read_state(interface, state_dir)
        outcome = plan(request, kernel, stored)
        check_lockout(outcome, os.environ if environ is None else environ, request.get("allow_lockout"))
        if outcome.changed and not check_mode:
            digest = apply(maps, kernel, outcome)
            rules_json = outcome.after_json or entries_json(outcome.after)
            write_state(interface, dict(interface=interface, rules=outcome.after, digest=digest,
                                        rules_digest=json_digest(rules_json), **outcome.settings_after),
                        state_dir, rules_json)
    return outcome.result(interface, request["state"], request.get("diff"), request.get("return_rules"))
