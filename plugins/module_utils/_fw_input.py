# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The config of xdp_rules as it arrives (a list, or the JSON text the action plugin sends) to validated rule
entries: a rule in canonical form (Rule.to_dict()) plus its optional `name`.

Canonical values are a fixed point of _fw_model.parse_rule, which lets items already in canonical form skip
parsing, and items equal to the current entries skip every check.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools
import json
import operator
from collections import namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_expiry
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_diff import FEW_DIFFER, equal_pairs
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import (
    ENTRY_KEYS, NOT_PLAIN, PLAIN_COUNT, PLAIN_KEYS, RULE_KEYS, RuleError, pack_canonical, pack_rule, parse_rule)
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import entries_json

PLAIN_ENTRY_KEYS = frozenset(("name",) + PLAIN_KEYS)


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
        raise RuleError(["config: not a JSON list of rules (%s)" % error])


def entry_values(entry):
    """The canonical values of RULE_KEYS of an entry, without those beyond PLAIN_KEYS when none of them is set
    (most entries: shorter tuples hash and compare faster)."""
    if PLAIN_ENTRY_KEYS.issuperset(entry):
        return tuple(map(entry.get, PLAIN_KEYS))
    values = tuple(map(entry.get, RULE_KEYS))
    return values[:PLAIN_COUNT] if values[PLAIN_COUNT:] == NOT_PLAIN else values


def _raw_values(item):
    values = entry_values(item)
    # bool is an int in Python: keep True and False from passing for a canonical 1 or 0 (port 1, icmp_code 0, ...)
    return None if bool in map(type, values) else values


def _is_entry(item, entry):
    """True when item equals the entry: in a list that mostly repeats the current rules, one dict comparison
    instead of checking each field. 1 == True and 0 == False, so an item with a bool is left to the full check."""
    return item == entry and bool not in map(type, item.values())


def _equals_a_bool(entries):
    """True when an entry has a value that True or False equals (port 1, protocol 0, and the 0s and 1s of the
    fields beyond the plain ones): then an item equal to it may not be the entry (see _is_entry)."""
    if 1 in map(operator.methodcaller("get", "port"), entries) or \
            0 in map(operator.methodcaller("get", "protocol"), entries):
        return True
    beyond_plain = itertools.compress(entries, map(operator.not_, map(PLAIN_ENTRY_KEYS.issuperset, entries)))
    return any(0 in entry.values() or 1 in entry.values() for entry in beyond_plain)


def _entry(rule, name):
    entry = rule.to_dict()
    if name:
        entry["name"] = name
    return entry


# entries: the validated entries of config items; pairs: for each, the index of an equal remembered entry or None
# (as equal_pairs gives); as_given: True when every entry is its item itself, so the items' JSON is the entries';
# timed: True when an entry equal to no remembered entry has a deadline or an expires_after (the others have a
# deadline only where the remembered entries have)
Parsed = namedtuple("Parsed", "entries pairs as_given timed")


class Entries:
    """Turns config items into entries; knows the packed xf_rule of every canonical value seen."""

    def __init__(self, now=None):
        self.now = now  # epoch seconds by which expires_at is checked (default: the clock at each parse)
        self.known = set()
        self.packed_of = {}
        self.pending = []
        self.remembered = []  # the entries last remembered, by position
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
        """The Parsed config items; default_action fills a missing action (state deleted)."""
        if not isinstance(items, list):
            raise RuleError(["config: must be a list of rules"])
        remembered = self.remembered
        pairs = equal_pairs(remembered, items)
        if _equals_a_bool(remembered):
            pairs = [None if known is None or not _is_entry(item, remembered[known]) else known
                     for item, known in zip(items, pairs)]
        entries = [None if known is None else item for item, known in zip(items, pairs)]
        misplaced = [index for index, entry in enumerate(entries) if entry is None]
        if len(misplaced) > len(remembered) // FEW_DIFFER:
            self.remembered_values()  # knowing them is cheaper than checking every misplaced item
        errors = []
        for index in misplaced:
            try:
                entries[index] = self._from_item(items[index], index, default_action)
            except RuleError as error:
                errors.extend(error.errors)
        if errors:
            raise RuleError(errors)
        as_given = all(entries[index] is items[index] for index in misplaced)
        return Parsed(entries, pairs, as_given, _fw_expiry.timed(map(entries.__getitem__, misplaced)))

    def _from_item(self, item, index, default_action):
        if not isinstance(item, dict):
            raise RuleError(["config[%d]: must be a dict" % index])
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise RuleError(["config[%d].name: must be a string" % index])
        if default_action and item.get("action") is None:
            item = dict(item, action=default_action)
        values = _raw_values(item)
        known = values in self.known and ENTRY_KEYS.issuperset(item)
        if not known and ENTRY_KEYS.issuperset(item) and values is not None:
            packed = pack_canonical(values)
            if packed is not None:  # already canonical: valid as it is
                self.known.add(values)
                self.packed_of[values] = packed
                known = True
        if known and item.get("name", True) and None not in item.values():
            return item  # already an entry (entries are never changed in place)
        if known:
            entry = dict((key, value) for key, value in item.items() if value is not None and key != "name")
        else:
            rule = parse_rule(dict((k, v) for k, v in item.items() if k != "name"), "config[%d]" % index, self.now)
            entry = _entry(rule, None)
            self.known.add(entry_values(entry))
            if rule.expires_after is None:  # else packed once _fw_expiry gives it a deadline
                self.packed_of[entry_values(entry)] = pack_rule(rule)
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
        rule = parse_rule(dict((k, v) for k, v in entry.items() if k != "name"), "rule %d" % (index + 1), self.now)
        self.packed_of[entry_values(entry)] = pack_rule(rule)
        return self.packed_of[entry_values(entry)]

    def _resolve_pending(self):
        for values, packed in self.pending:
            for value, rule in zip(values, packed()):
                self.packed_of.setdefault(value, rule)
        self.pending = []
