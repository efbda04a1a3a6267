# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rules that expire: a config entry's expires_after becomes a deadline (expires_at) when it is applied, and
the rules whose deadline has passed leave the rule set at the next run (the data plane stops matching them at
the deadline on its own).

Entries are canonical (see _fw_input): expires_at is text in EXPIRES_FORMAT, which sorts as the time does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import operator
import re
import time

from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import EXPIRES_FORMAT, EXPIRY_KEYS, rule_key

CANONICAL_DEADLINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
# Most rule sets have no deadline at all: these look at every entry in C, before any loop in Python does.
DEADLINE = operator.methodcaller("get", "expires_at")
DELAY = operator.methodcaller("get", "expires_after")
TIMED = frozenset(EXPIRY_KEYS)


def deadline_text(seconds):
    return time.strftime(EXPIRES_FORMAT, time.gmtime(seconds))


def resolve(entries, installed, now):
    """entries with each expires_after turned into expires_at: the deadline of the installed rule with the same
    identity while it is still ahead (so a playbook run again keeps the deadline it set), else now +
    expires_after. Entries without expires_after are returned as they are."""
    if not any(map(DELAY, entries)):
        return entries
    pending = [index for index, entry in enumerate(entries) if entry.get("expires_after") is not None]
    now_text = deadline_text(now)
    deadlines = dict((rule_key(rule), rule["expires_at"]) for rule in installed
                     if rule.get("expires_at") is not None and rule["expires_at"] > now_text)
    resolved = list(entries)
    for index in pending:
        entry = dict(entries[index])
        after = entry.pop("expires_after")
        entry["expires_at"] = deadlines.get(rule_key(entry)) or deadline_text(int(now) + after)
        resolved[index] = entry
    return resolved


def expired(entries, now):
    """(the entries whose deadline is ahead or that have none, those whose deadline has passed), in order."""
    if not any(map(DEADLINE, entries)):
        return entries, []
    now_text = deadline_text(now)
    gone = [index for index, entry in enumerate(entries)
            if entry.get("expires_at") is not None and entry["expires_at"] <= now_text]
    if not gone:
        return entries, []
    doomed = set(gone)
    return [entry for index, entry in enumerate(entries) if index not in doomed], [entries[index] for index in gone]


def lapsed(items, now, held):
    """(config items, those of them left out): an item in canonical form whose deadline has passed is left out
    when the host holds (or last stored) a rule with its identity, which then simply expired: restoring or
    reverting a stored rule set, or running a playbook again, after a deadline. Any other item with a deadline
    in the past is refused by the parser."""
    held = list(held)
    if not isinstance(items, list) or not any(map(DEADLINE, held)):
        return items, []
    now_text = deadline_text(now)
    gone = [index for index, item in enumerate(items) if isinstance(item, dict)
            and isinstance(item.get("expires_at"), str) and CANONICAL_DEADLINE.match(item["expires_at"])
            and item["expires_at"] <= now_text]
    if gone:
        held_keys = set(map(rule_key, held))
        gone = set(index for index in gone if rule_key(items[index]) in held_keys)
    if not gone:
        return items, []
    return ([item for index, item in enumerate(items) if index not in gone],
            [item for index, item in enumerate(items) if index in gone])


def timed(entries):
    """True when an entry has an expires_at or an expires_after key (entries hold no None values)."""
    return not all(map(TIMED.isdisjoint, entries))


def next_deadline(entries):
    """The earliest expires_at of entries, None when none expires."""
    return min(filter(None, map(DEADLINE, entries)), default=None)


def due(next_text, now):
    """True when a deadline next_text (as next_deadline gives, or None) has passed."""
    return next_text is not None and next_text <= deadline_text(now)
