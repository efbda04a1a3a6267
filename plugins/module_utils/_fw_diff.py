# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How two ordered rule lists differ: which rule of the one each rule of the other is (pairing), the
summary counts and the diff lines."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import itertools
import operator

from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import rule_key, rule_line

# A change is small while not more than 1 rule in FEW_DIFFER differs from the rule at its place: work that
# looks at the differing rules alone is then worth it.
FEW_DIFFER = 8
RESYNC_WINDOW = 8  # rules looked ahead for, where two lists stop being equal


def longest_increasing(sequence):
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
    in_order = longest_increasing(kept)
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
    positions (not more than 1 in FEW_DIFFER), or rules that all keep their identity where they are;
    else None (rules removed before others and added elsewhere shift every later position)."""
    if len(before) != len(after):
        return None
    differing = [position for position, (old, new) in enumerate(zip(before, after)) if old != new]
    if len(differing) <= len(before) // FEW_DIFFER or \
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
