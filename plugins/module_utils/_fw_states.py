# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The five states of xdp_rules: the ordered rule list each makes of the current rules and the config
(rule entries, see _fw_input), with rule identities unique in every list."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools
import operator

from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import (
    MATCH_FIELDS, PLAIN_KEYS, RuleError, describe_key, rule_key)

PLAIN_MATCHES = PLAIN_KEYS[1:]  # the match fields most rules stop at
ADDRESSES = ("source", "destination")  # what tells the rules of a long list apart, most often


def _identities(rules, fields=MATCH_FIELDS):
    """[rule_key(rule) for rule in rules], a field at a time; with fewer fields, identities that only ever tell
    more rules apart."""
    names = list(map(operator.methodcaller("get", "name"), rules))
    fields = [map(operator.methodcaller("get", field), rules) for field in fields]
    matches = zip(itertools.repeat("match"), *fields)
    if not any(names):
        return list(matches)
    return [("name", name) if name else match for name, match in zip(names, matches)]


def check_unique(rules, what):
    for fields in (ADDRESSES, PLAIN_MATCHES, MATCH_FIELDS):  # rules apart by some matches are apart by all
        keys = _identities(rules, fields)
        if len(set(keys)) == len(keys):
            return
    seen = set()
    for key in keys:
        if key in seen:
            raise RuleError(["%s holds two rules with the same identity (%s); give them distinct names"
                             % (what, describe_key(key))])
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
