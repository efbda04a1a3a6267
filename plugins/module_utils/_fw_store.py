# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The desired state of an interface's rules on disk (/etc/xdpfleet/<interface>.json): what xdp_rules last
applied, which the boot-time restore applies again, and beside it an index of the rules' names for facts."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import json
import os
from collections import namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors, _hostfs

STATE_DIR = "/etc/xdpfleet"
STATE_FILE_VERSION = 1


class StoreError(_errors.XdpfleetError):
    pass


def entries_json(entries):
    """A list of rule entries as canonical JSON text (so 1 and true, or 22 and "22", differ); None if not JSON."""
    try:
        return json.dumps(entries, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def json_digest(text):
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def state_path(interface, state_dir=STATE_DIR):
    return os.path.join(state_dir, "%s.json" % interface)


def previous_path(interface, state_dir=STATE_DIR):
    """The desired state before the last change: what a rollout's snapshot may be reverted to."""
    return os.path.join(state_dir, "%s.previous.json" % interface)


def shadow_path(interface, state_dir=STATE_DIR):
    """The shadow set installed beside the enforced one (xdp_rules mode: shadow), in the desired state's form."""
    return os.path.join(state_dir, "%s.shadow.json" % interface)


def read_state(interface, state_dir=STATE_DIR, path=None):
    """The desired state last written for interface (or the one in path), or None; with applying: true when a
    change was stopped part-way after it (the kernel may hold some of the next state)."""
    path = path or state_path(interface, state_dir)
    try:
        with open(path) as handle:
            document = json.load(handle)
    except IOError:
        return None
    except ValueError as error:
        raise StoreError("%s is not valid JSON: %s; remove it, and the next xdp_rules run writes it anew"
                         % (path, error))
    if os.path.exists(applying_path(interface, state_dir)):
        document["applying"] = True
    return document


def applying_path(interface, state_dir=STATE_DIR):
    return os.path.join(state_dir, "%s.applying" % interface)


@contextlib.contextmanager
def applying(interface, state_dir=STATE_DIR):
    """Marks the stored desired state as possibly behind the kernel while a change is applied and stored; the
    mark stays when that fails part-way."""
    path = applying_path(interface, state_dir)
    try:
        if not os.path.isdir(state_dir):
            os.makedirs(state_dir, 0o755)
        with open(path, "w"):
            pass
    except OSError as error:
        raise StoreError("cannot write %s: %s" % (path, error))
    yield
    os.unlink(path)


def write_state(interface, document, state_dir=STATE_DIR, rules_json=None):
    """Writes the desired state so that a reader sees the old file or the new one, never a part;
    rules_json is entries_json(document["rules"]) when that is known.

    Beside it goes a small index of the named rules by position, so that facts can name the
    rules they report without parsing a desired state of 100,000 rules.
    """
    try:
        _write_state(interface, document, state_dir, rules_json)
    except OSError as error:
        raise StoreError("cannot write the desired state of %s into %s: %s" % (interface, state_dir, error))


def _write_state(interface, document, state_dir, rules_json):
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, 0o755)
    index = index_of(document)
    names = dict((str(position), name) for position, name in index.names.items())
    _hostfs.write_atomically(names_path(interface, state_dir),
                             _compact(dict(digest=document["digest"], names=names, sets=index.sets)))
    others = _compact(dict((key, value) for key, value in document.items() if key != "rules"),
                      version=STATE_FILE_VERSION)
    link_state(interface, previous_path(interface, state_dir), state_dir)
    rules_json = entries_json(document["rules"]) if rules_json is None else rules_json
    _hostfs.write_atomically(state_path(interface, state_dir), '{"rules":%s,%s' % (rules_json, others[1:]))


def link_state(interface, path, state_dir=STATE_DIR):
    """Links the current state file as path, such as the previous one (the current is replaced, never rewritten,
    so the link keeps what it holds now)."""
    current = state_path(interface, state_dir)
    if not os.path.exists(current):
        return
    linking = path + ".new"
    if os.path.exists(linking):
        os.unlink(linking)
    os.link(current, linking)
    os.replace(linking, path)


def restoring_request(interface, pin_dir, document):
    """The xdp_rules request that makes the kernel hold a stored desired state again. The host restores it by
    itself (at boot, or reverting an unconfirmed change), so the lockout guard is off."""
    return {"interface": interface, "pin_dir": pin_dir, "state": "overridden", "config": document["rules"],
            "sets": document.get("sets"), "content_digest": document.get("request_digest"),
            "default_action": document.get("default_action"), "sampling": document.get("sampling"),
            "allow_lockout": True}


def write_shadow(interface, document, state_dir=STATE_DIR):
    try:
        if not os.path.isdir(state_dir):
            os.makedirs(state_dir, 0o755)
        _hostfs.write_atomically(shadow_path(interface, state_dir), _compact(document, version=STATE_FILE_VERSION))
    except OSError as error:
        raise StoreError("cannot write the shadow set of %s into %s: %s" % (interface, state_dir, error))


def remove_shadow(interface, state_dir=STATE_DIR):
    """Removes the record of a shadow set; True when there was one."""
    try:
        os.unlink(shadow_path(interface, state_dir))
    except FileNotFoundError:
        return False
    return True


def _compact(document, **more):
    return json.dumps(dict(document, **more), separators=(",", ":"))


def names_path(interface, state_dir=STATE_DIR):
    return os.path.join(state_dir, "%s.names" % interface)


# names: {position: name} of the named rules; sets: {set name: entries} of the sets the rules name
Index = namedtuple("Index", "names sets")


def index_of(document):
    """The Index of a desired state (the enforced one, or a shadow set's)."""
    names = dict((number, rule["name"]) for number, rule in enumerate(document.get("rules", ())) if rule.get("name"))
    return Index(names, dict((name, len(address_set["lines"]))
                             for name, address_set in (document.get("sets") or {}).items()))


def read_shadow(interface, digest, state_dir=STATE_DIR):
    """The stored shadow set when it is the rule set with this digest (the one the kernel holds), else {}."""
    document = read_state(interface, path=shadow_path(interface, state_dir)) or {}
    return document if document.get("digest") == digest else {}


def read_index(interface, digest, state_dir=STATE_DIR):
    """The Index of the rule set with this digest; empty when the index on disk describes another."""
    try:
        with open(names_path(interface, state_dir)) as handle:
            index = json.load(handle)
    except (IOError, ValueError):
        return Index({}, {})
    if index.get("digest") != digest:
        return Index({}, {})
    return Index(dict((int(position), name) for position, name in index["names"].items()), index.get("sets", {}))


def read_names(interface, digest, state_dir=STATE_DIR):
    """{position: name} of the named rules, when the index describes the rule set with this digest."""
    return read_index(interface, digest, state_dir).names
