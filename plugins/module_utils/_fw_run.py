# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One xdp_rules task on a host: read the kernel's rule set and the stored desired state, plan the change,
guard against a lockout, apply it through the inactive slot and store the new desired state."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools
import os
import time
from collections import namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils import (
    _fw_confirm, _fw_expiry, _fw_sets, _fw_shadow, _fw_slots, _hostfs)
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_compile import (
    assign_counters, compile_packed, patch_compiled, place_rules, same_matches)
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_diff import (
    compare, differing_in_place, longest_increasing, pair_rules, setting_lines)
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_input import (
    Entries, config_items, config_text, entry_values)
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_kernel import (
    FreshRuleset, KernelRuleset, firewall_pinned, pinned_maps, ruleset_digest, shadow_slot)
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_lockout import check_lockout
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import RuleError, rule_key
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import MAX_RULES
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_states import desired_rules
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import (
    STATE_DIR, StoreError, applying, entries_json, json_digest, previous_path, read_shadow, read_state, remove_shadow,
    shadow_path, write_shadow, write_state)

FULL_LISTS_UP_TO = 1000  # larger before/after lists are returned only with return_rules
UNCHANGED_BY_SAME_CONFIG = ("merged", "replaced", "overridden")


class Change:
    """A planned change of the rule set and settings; `result` is the module's return value.

    pairs: for each rule of after, (index of its rule in before or None for a new rule, True when the two are
    equal). in_place: every rule of after either equals the rule at its place in before or takes that place
    (a few rules differ, or the rules keep their identities where they are): rules keep their positions.
    sets_before, sets_after: {name: AddressSet} of the sets the rules name (before: as far as known).
    """

    def __init__(self, before, after, settings_before, settings_after, with_lines, equal_kept=None,
                 sets_before=None, sets_after=None):
        self.before, self.after = before, after
        self.settings_before, self.settings_after = settings_before, settings_after
        self.sets_before, self.sets_after = sets_before or {}, sets_after or {}
        # (added, removed) entries of each set of after whose entries changed
        self.set_changes = dict((name, _fw_sets.changes(self.sets_before.get(name), address_set))
                                for name, address_set in self.sets_after.items()
                                if name not in self.sets_before or self.sets_before[name].digest != address_set.digest)
        self.sets_changed = bool(self.set_changes)
        differing = differing_in_place(before, after)
        self.in_place = differing is not None
        self._pairs = None if self.in_place else pair_rules(before, after, equal_kept)
        # the numbers of the rules of after that equal no rule of before
        self.unequal = differing if self.in_place else [
            number for number, (_index, equal) in enumerate(self._pairs) if not equal]
        self.summary, self.lines = compare(before, after, with_lines, self._pairs)
        self.lines = setting_lines(settings_before, settings_after) + self.lines + self._set_lines(with_lines)
        self.ruleset_changed = before != after or self.sets_changed or \
            settings_before["default_action"] != settings_after["default_action"]
        self.changed = self.ruleset_changed or settings_before != settings_after
        self.packed = None  # the packed rules of after, once the rule set changes
        self.unequal_values = None  # entry_values of the rules of after numbered in unequal, with packed
        self.after_json = None  # entries_json(after), when known
        self.expired = []  # the rules of before whose deadline passed, which after leaves out
        self.next_expiry = None  # the earliest deadline of after (see _fw_expiry.next_deadline)

    @property
    def pairs(self):
        if self._pairs is None:  # in place: each rule of after is paired with the rule at its place
            unequal = set(self.unequal)
            self._pairs = [(number, number not in unequal) for number in range(len(self.after))]
        return self._pairs

    def left(self):
        """The indexes of the rules of before that no equal rule of after takes."""
        if self.in_place:
            return self.unequal
        paired = set(index for index, equal in self.pairs if equal)
        return [index for index in range(len(self.before)) if index not in paired]

    def _set_lines(self, with_lines):
        if not (with_lines and self.sets_changed):
            return []
        return [line for name, (added, removed) in sorted(self.set_changes.items())
                for line in _fw_sets.diff_lines(name, self.sets_after[name], added, removed)]

    def set_counts(self):
        """{name: {entries, added, removed}} of the sets after the change."""
        counts = {}
        for name, address_set in self.sets_after.items():
            added, removed = self.set_changes.get(name, ((), ()))
            counts[name] = {"entries": len(address_set.lines), "added": len(added), "removed": len(removed)}
        return counts

    def result(self, interface, state, diff, return_rules=False):
        """The module result; before/after are left out when either has more than FULL_LISTS_UP_TO rules, unless
        return_rules (moving 100,000 rules through Ansible's result handling costs seconds)."""
        full = return_rules or max(len(self.before), len(self.after)) <= FULL_LISTS_UP_TO
        result = dict(changed=self.changed, interface=interface, summary=self.summary, sets=self.set_counts(),
                      rule_count={"before": len(self.before), "after": len(self.after)}, expired=self.expired,
                      **self.settings_after)
        if full:
            result["before"] = self.before
        if state == "gathered":
            result["gathered"] = self.before
        elif self.changed and full:
            result["after"] = self.after
        if diff:
            result["diff"] = {"prepared": "\n".join(self.lines)}
        return result


# --- planning ------------------------------------------------------------------------------------


def _have(kernel, stored, entries, set_names):
    """(The current entries, position by position those of the kernel; True when they come from the stored
    desired state, checked for twins when it was written): the stored desired state when the kernel holds
    exactly what it recorded, else the kernel's rules (their names are not in the kernel, their sets' names
    where set_names {tag: name} has them)."""
    from_state = _kernel_as_stored(kernel, stored)
    have = stored["rules"] if from_state else kernel.entries(set_names)
    entries.remember(have, lambda: kernel.packed)
    return have, from_state


def _kernel_as_stored(kernel, stored):
    """True when the kernel holds what the stored desired state recorded (no change stopped part-way)."""
    return bool(stored and stored.get("digest") == kernel.digest and not stored.get("applying"))


def _sets(request, stored, from_state, after):
    """({name: AddressSet} before, as far as known; after: those the rules of after name)."""
    before = _fw_sets.sets_of_option(stored.get("sets")) if from_state else {}
    given = _fw_sets.sets_of_option(request.get("sets"))
    if request["state"] == "overridden":
        available = given
    elif request["state"] in ("merged", "replaced"):
        available = dict(before, **given)
    else:  # deleted, gathered: the sets stay what they are
        available = before
    named = _named_sets(after)
    missing = sorted(name for name in named if name not in available)
    if missing:
        raise RuleError(["%s: set %s is not defined (give it in sets: a list, or {file: PATH})"
                         % (named[name], name) for name in missing])
    return before, dict((name, available[name]) for name in named)


def _named_sets(rules):
    """{set name: where the first rule naming it is} of the sets rules name."""
    named = {}
    for number, rule in enumerate(rules):
        for key in ("source_set", "destination_set"):
            if rule.get(key) and rule[key] not in named:
                named[rule[key]] = "rule %d.%s" % (number + 1, key)
    return named


def _settings(request, kernel):
    sampling = request.get("sampling")
    if sampling is not None and not 0 <= sampling <= 0xFFFFFFFF:
        raise RuleError(["sampling: %r is not 0 (off) or N for 1 in N drops (up to 2^32-1)" % (sampling,)])
    return {"default_action": request.get("default_action") or kernel.default_action,
            "sampling": kernel.sampling if sampling is None else sampling}


def _same_as_stored(request, kernel, stored, config_json):
    """True when config is exactly the stored canonical rules the kernel holds, with no sets, so that the state
    keeps them as they are: decided by digests, before any per-rule work."""
    return bool(request["state"] in UNCHANGED_BY_SAME_CONFIG and _kernel_as_stored(kernel, stored)
                and not request.get("sets") and not stored.get("sets")
                and stored.get("rules_digest") is not None
                and stored["rules_digest"] == json_digest(config_json))


def plan(request, kernel, stored, now=None):
    """The Change that request makes of the kernel's rule set and the stored desired state at now (epoch seconds,
    default the clock): rules whose deadline has passed leave the rule set."""
    now = time.time() if now is None else now
    state = request["state"]
    settings_before = {"default_action": kernel.default_action, "sampling": kernel.sampling}
    settings_after = settings_before if state == "gathered" else _settings(request, kernel)
    diff = bool(request.get("diff"))
    config_json = config_text(request.get("config")) if state in UNCHANGED_BY_SAME_CONFIG else None
    if settings_after["default_action"] == kernel.default_action and \
            _same_as_stored(request, kernel, stored, config_json) and not _expiring(stored, now):
        change = Change(stored["rules"], stored["rules"], settings_before, settings_after, diff)
        change.next_expiry = stored.get("next_expiry")
        return change
    entries = Entries(now)
    have, have_unique = _have(kernel, stored, entries, _set_names(request, stored))
    # most rule sets have no deadline: the kernel's rules and the stored desired state say so without a look at
    # every rule, the config's entries where they are not the current ones
    held_timed = kernel.has_deadlines() or (stored or {}).get("next_expiry") is not None
    items, lapsed = config_items(request.get("config")) or [], []
    if held_timed:
        items, lapsed = _fw_expiry.lapsed(items, now, itertools.chain(have, (stored or {}).get("rules", ())))
    want = entries.from_items(items, "drop" if state == "deleted" else None)
    timed = held_timed or want.timed
    wanted = _fw_expiry.resolve(want.entries, have, now) if timed else want.entries
    after = desired_rules(state, have, wanted, have_unique)
    after, expired = _fw_expiry.expired(after, now) if timed and state != "gathered" else (after, [])
    sets_before, sets_after = _sets(request, stored or {}, have_unique, after)
    # overridden: after is the config's entries, which want.pairs pairs with have
    as_given = state == "overridden" and wanted is want.entries and not (expired or lapsed)
    change = Change(have, after, settings_before, settings_after, diff, want.pairs if as_given else None,
                    sets_before, sets_after)
    expired_keys = set(map(rule_key, expired))
    change.expired = expired + [item for item in lapsed if rule_key(item) not in expired_keys]
    change.next_expiry = _fw_expiry.next_deadline(after) if timed else None
    if change.ruleset_changed:
        _pack(change, kernel, entries)
    if as_given and want.as_given:
        change.after_json = config_json
    return change


def _expiring(stored, now):
    """True when a rule of the stored desired state has passed its deadline."""
    return _fw_expiry.due((stored or {}).get("next_expiry"), now)


def _set_names(request, stored):
    """{set tag: name} of the sets the request and the stored desired state name."""
    names = set(request.get("sets") or ()) | set((stored or {}).get("sets") or ())
    return _fw_sets.tag_names(name for name in names if isinstance(name, str))


def _pack(change, kernel, entries):
    """Sets change.packed: the rules equal to one the kernel holds are taken from it, only the others are
    packed."""
    current = kernel.packed
    change.packed = [current[index] if equal else None for index, equal in change.pairs]
    changed = [change.after[number] for number in change.unequal]
    values = change.unequal_values = list(map(entry_values, changed))
    for number, packed in zip(change.unequal, entries.packed(changed, values, change.unequal)):
        change.packed[number] = packed


# --- applying ------------------------------------------------------------------------------------


# A rule-set switch compiled and ready to write. Preparing it writes nothing, so that a rule set the program
# cannot hold (too many rules, too long a chain) is refused before anything on the host changes.
Switch = namedtuple("Switch", "compiled fresh_counters rules_now sets_changed")


def prepare_switch(maps, kernel, change):
    """The Switch that makes the kernel hold the change's rule set, kept rules keeping their counters; None when
    the rule set stays.

    When every rule keeps its match (only actions change) and the inactive slot holds the index maps of the
    current rules, only the rules are written: the work is that of the change, not of the rule set.
    """
    if not change.ruleset_changed:
        return None
    counters, fresh = _counters(kernel, change)
    default_action = change.settings_after["default_action"]
    inactive = _keeps_matches(kernel, change) and _fw_slots.inactive_with_matches(maps, kernel.raw, kernel.meta)
    if inactive:
        changed = dict((kernel.positions[number], (change.packed[number], counters[number]))
                       for number in change.unequal)
        compiled = patch_compiled(kernel.meta, kernel.by_position(), default_action, changed)
        slot, inactive_rules = inactive
        return Switch(compiled, fresh, {slot: inactive_rules, 1 - slot: kernel.raw}, False)
    compiled = compile_packed(change.packed, default_action, counters, _positions(kernel, change),
                              _fw_sets.by_tag(change.sets_after))
    return Switch(compiled, fresh, {kernel.active: kernel.raw}, change.sets_changed)


def apply(maps, kernel, change, switch):
    """Makes the kernel hold the change's rule set (through the prepared switch) and settings; returns the digest
    of the active rule set."""
    digest = kernel.digest
    if switch:
        _fw_slots.apply_ruleset(maps, switch.compiled, switch.fresh_counters, switch.rules_now, switch.sets_changed)
        digest = ruleset_digest(switch.compiled.meta, switch.compiled.rules)
    if change.settings_before["sampling"] != change.settings_after["sampling"]:
        _fw_slots.set_sample_rate(maps, change.settings_after["sampling"])
    return digest


def _positions(kernel, change):
    """Where each rule goes in the rules map: a rule equal to one the kernel holds stays where it is, unless
    it moved past other kept rules (see _fw_compile.place_rules)."""
    if change.in_place:
        return kernel.positions
    kept = [index if equal else None for index, equal in change.pairs]
    numbers = [number for number, index in enumerate(kept) if index is not None]
    if not numbers:
        return range(len(kept))
    in_order = longest_increasing([kept[number] for number in numbers])
    anchors = [None] * len(kept)
    for order, number in enumerate(numbers):
        if order in in_order:
            anchors[number] = kernel.positions[kept[number]]
    return place_rules(anchors)


def _counters(kernel, change):
    """(counter slot of each rule, slots of new rules): a rule equal to one the kernel holds keeps its slot;
    the others are told apart by their canonical values (hashing those is cheaper than hashing Rule
    objects), so that a rule renamed or moved keeps its slot too."""
    current = kernel.counters()
    left = change.left()
    before_values = [entry_values(change.before[index]) for index in left]
    counters = [current[index] if equal else None for index, equal in change.pairs]
    changed, fresh = assign_counters(change.unequal_values, before_values, [current[index] for index in left],
                                     current)
    for number, counter in zip(change.unequal, changed):
        counters[number] = counter
    return counters, fresh


def _keeps_matches(kernel, change):
    if not change.in_place or change.sets_changed:
        return False
    packed, current = change.packed, kernel.packed
    return all(same_matches(packed[number], current[number]) for number in change.unequal)


def run(request, check_mode=False, environ=None, state_dir=STATE_DIR, lock_dir=_hostfs.LOCK_DIR):
    """One xdp_rules task on this host; returns the module result (raises an XdpfleetError). In check mode on an
    interface whose firewall is not attached yet, the change is planned against a freshly attached one."""
    interface = request["interface"]
    pin_dir = request.get("pin_dir") or _hostfs.default_pin_dir(interface)
    environ = os.environ if environ is None else environ
    mode = _checked_mode(request)
    _fw_confirm.check_request(request)
    if request["state"] == "confirmed":
        return _fw_confirm.confirm(interface, check_mode, state_dir, lock_dir)
    if check_mode and mode == "enforce" and not firewall_pinned(pin_dir):
        if _content_missing(request):
            return _asking_for_content(interface)
        revert = _fw_confirm.Revert(interface, state_dir, lock_dir, pin_dir)
        revert.check(request)
        change = _checked(request, FreshRuleset, None, environ)
        return dict(change.result(interface, request["state"], request.get("diff"), request.get("return_rules")),
                    **revert.after(request, change.changed, check_mode))
    with _hostfs.host_lock(interface, lock_dir), pinned_maps(pin_dir) as maps:
        kernel = KernelRuleset(maps)
        stored = read_state(interface, state_dir)
        revert = _fw_confirm.Revert(interface, state_dir, lock_dir, pin_dir)
        if request.get("revert_token"):
            request = revert.firing(request)
            if request is None:
                return dict(changed=False, interface=interface, revert=revert.status())
        revert.check(request)
        if mode != "enforce":
            with _fw_shadow.pinned_shadow_maps(pin_dir, interface) as shadow_maps:
                return SHADOW_MODES[mode](request, dict(maps, **shadow_maps), kernel, stored, check_mode, environ,
                                          state_dir, revert)
        if request.get("revert_to"):
            request = _reverting(request, stored, state_dir)
        if _applied_already(request, kernel, stored) and not _expiring(stored, time.time()):
            return dict(_unchanged(request, stored), **revert.after(request, False, check_mode))
        if _content_missing(request):
            return _asking_for_content(interface)
        change = _checked(request, kernel, stored, environ)
        shadow_discarded = change.ruleset_changed and shadow_slot(maps) is not None
        if change.changed and not check_mode:
            switch = prepare_switch(maps, kernel, change)
            revert.before_change(request, _revert_target(kernel, stored, change))
            with applying(interface, state_dir):
                digest = apply(maps, kernel, change, switch)
                _store(interface, request, change, digest, state_dir)
            if shadow_discarded:
                remove_shadow(interface, state_dir)
        reverting = revert.after(request, change.changed, check_mode)
    result = dict(change.result(interface, request["state"], request.get("diff"), request.get("return_rules")),
                  shadow_discarded=shadow_discarded, **reverting)
    if request["state"] == "gathered":
        result["request_digest"] = stored.get("request_digest") if _kernel_as_stored(kernel, stored) else None
    return result


def _revert_target(kernel, stored, change):
    """What a revert armed now goes back to (see _fw_confirm.Revert.before_change): the stored desired state when
    the kernel holds it, else the rules and settings the kernel holds."""
    if _kernel_as_stored(kernel, stored):
        return None
    return dict(rules=change.before, sets=_fw_sets.stored_form(change.sets_before), request_digest=None,
                **change.settings_before)


def _store(interface, request, change, digest, state_dir):
    write_state(interface, _document(interface, request, change, digest), state_dir,
                change.after_json or entries_json(change.after))


def _document(interface, request, change, digest):
    """The desired state of the change's rule set, as _fw_store keeps it."""
    rules_json = change.after_json or entries_json(change.after)
    return dict(interface=interface, rules=change.after, digest=digest, rules_digest=json_digest(rules_json),
                sets=_fw_sets.stored_form(change.sets_after), request_digest=request.get("content_digest"),
                next_expiry=change.next_expiry, **change.settings_after)


# --- shadow rule sets (mode: shadow, promote, discard) --------------------------------------------------------


def _shadow(request, maps, kernel, stored, check_mode, environ, state_dir, revert):
    """mode: shadow: the rule set the request makes of the enforced one goes into the other slot as a shadow set.
    The result compares the enforced set (before) with the shadow set (after); changed: the shadow set changes."""
    interface, digest = request["interface"], request.get("content_digest")
    installed = _installed_shadow(maps, interface, state_dir)
    if digest and installed and installed.get("request_digest") == digest:
        return _shadow_result(_unchanged(request, installed), "shadow", False, revert.after(request, False, check_mode))
    if _content_missing(request):
        return _asking_for_content(interface)
    change = plan(request, kernel, stored)
    switch = _shadow_switch(maps, kernel, change)
    shadow_digest = ruleset_digest(switch.compiled.meta, switch.compiled.rules)
    changed = not (installed and installed["digest"] == shadow_digest)
    if changed and not check_mode:
        _fw_slots.install_shadow(maps, switch.compiled, switch.fresh_counters,
                                 switch.rules_now.get(1 - kernel.active), switch.sets_changed)
        write_shadow(interface, dict(_document(interface, request, change, shadow_digest), installed_at=time.time()),
                     state_dir)
    result = change.result(interface, request["state"], request.get("diff"), request.get("return_rules"))
    return _shadow_result(result, "shadow", changed, revert.after(request, False, check_mode))


def _shadow_switch(maps, kernel, change):
    """The Switch that writes the change's rule set into the inactive slot (also when it is the enforced set
    itself); its new rules count in slots that no enforced rule uses."""
    switch = prepare_switch(maps, kernel, change)
    if switch is None:
        compiled = compile_packed(kernel.packed, change.settings_after["default_action"], kernel.counters(),
                                  kernel.positions, _fw_sets.by_tag(change.sets_after))
        return Switch(compiled, [], {}, True)
    if set(switch.fresh_counters) & set(kernel.counters()):
        raise RuleError(["the shadow set's new rules need more hit-counter slots than the enforced set leaves free "
                         "(%d in all): shadow fewer new rules at a time" % MAX_RULES])
    return switch


def _installed_shadow(maps, interface, state_dir):
    """The stored shadow set when the kernel holds it as a shadow set, else None."""
    slot = shadow_slot(maps)
    if slot is None:
        return None
    return read_shadow(interface, KernelRuleset(maps, slot).digest, state_dir) or None


def _promote(request, maps, kernel, stored, check_mode, environ, state_dir, revert):
    """mode: promote: the shadow set becomes the enforced one by one word's switch of slots; the lockout guard
    checks it as any change, and confirm_within arms its revert as for any change. Without a shadow set installed,
    nothing changes."""
    interface = request["interface"]
    installed = _installed_shadow(maps, interface, state_dir)
    if installed is None:
        return _shadow_result(_as_is(request, kernel, stored), "promote", False,
                              revert.after(request, False, check_mode))
    request = dict(request, state="overridden", config=installed["rules"], sets=installed.get("sets"),
                   default_action=installed["default_action"], sampling=installed["sampling"],
                   content_digest=installed.get("request_digest"))
    change = _checked(request, kernel, stored, environ)
    if not check_mode:
        revert.before_change(request, _revert_target(kernel, stored, change))
        with applying(interface, state_dir):
            _fw_slots.promote_shadow(maps)
            apply(maps, kernel, change, None)  # the settings
            _store(interface, request, change, installed["digest"], state_dir)
        remove_shadow(interface, state_dir)
    result = change.result(interface, "overridden", request.get("diff"), request.get("return_rules"))
    return _shadow_result(result, "promote", True, revert.after(request, True, check_mode))


def _discard(request, maps, kernel, stored, check_mode, environ, state_dir, revert):
    """mode: discard: the shadow set stops classifying and its record goes."""
    interface = request["interface"]
    changed = shadow_slot(maps) is not None or os.path.exists(shadow_path(interface, state_dir))
    if changed and not check_mode:
        _fw_slots.discard_shadow(maps)
        remove_shadow(interface, state_dir)
    return _shadow_result(_as_is(request, kernel, stored), "discard", changed, revert.after(request, False, check_mode))


def _as_is(request, kernel, stored):
    """The result of a task that leaves the enforced rule set as it is."""
    return plan(dict(request, state="gathered"), kernel, stored).result(
        request["interface"], "gathered", request.get("diff"), request.get("return_rules"))


def _checked_mode(request):
    """The request's mode, once it is known to go with the rest of the request."""
    mode = request.get("mode") or "enforce"
    given = ("config", "sets", "revert_to", "content_digest")  # the action plugin sends content by its digest first
    if mode in ("promote", "discard") and any(request.get(key) is not None for key in given):
        raise RuleError(["mode: %s acts on the installed shadow set: leave out config, rules_file, sets and "
                         "revert_to" % mode])
    if mode == "shadow" and (request["state"] == "gathered" or request.get("revert_to")):
        raise RuleError(["mode: shadow installs the rule set a change makes: give a state other than gathered, "
                         "and no revert_to"])
    return mode


def _shadow_result(result, mode, changed, reverting):
    """The result of a task with this mode; reverting: what _fw_confirm.Revert.after says of the revert (its
    changed, when it gives one, wins: a confirmation, or a deadline moved)."""
    return dict(dict(result, changed=changed, mode=mode), **reverting)


SHADOW_MODES = {"shadow": _shadow, "promote": _promote, "discard": _discard}


# --- content addressing: the action plugin first sends the digest of the request alone ---------------------


def _content_missing(request):
    """True for the action plugin's first call, which carries the digest of the request but not its content."""
    return bool(request.get("content_digest")) and request.get("config") is None and request.get("sets") is None


def _asking_for_content(interface):
    """The answer to the action plugin's first call where the host has not applied its request."""
    return dict(changed=False, interface=interface, content_needed=True)


def _applied_already(request, kernel, stored):
    """True when the request with this digest is the last one applied and the kernel still holds its result:
    applying it again changes nothing (merged, replaced, overridden and deleted are idempotent)."""
    digest = request.get("content_digest")
    return bool(digest and request["state"] != "gathered" and _kernel_as_stored(kernel, stored)
                and stored.get("request_digest") == digest)


def _reverting(request, stored, state_dir):
    """The request that makes the rule set that of the request with digest revert_to again, taken from the
    current or the previous desired state on the host."""
    digest = request["revert_to"]
    previous = read_state(request["interface"], path=previous_path(request["interface"], state_dir))
    for document in (stored, previous):
        if document and document.get("request_digest") == digest:
            return dict(request, state="overridden", config=document["rules"], sets=document.get("sets"),
                        default_action=document["default_action"], sampling=document["sampling"],
                        content_digest=digest)
    raise StoreError("revert_to: %s is neither the current nor the previous request applied on %s; give the rules "
                     "to restore instead" % (digest, request["interface"]))


def _unchanged(request, stored):
    """The result of a request applied already, from the stored desired state."""
    rules, settings = stored["rules"], dict((key, stored[key]) for key in ("default_action", "sampling"))
    sets = _fw_sets.sets_of_option(stored.get("sets"))
    change = Change(rules, rules, settings, settings, False, sets_before=sets, sets_after=sets)
    return change.result(request["interface"], request["state"], request.get("diff"), request.get("return_rules"))


def _checked(request, kernel, stored, environ):
    """The planned Change, once the lockout guard has let it through."""
    change = plan(request, kernel, stored)
    if change.ruleset_changed and not request.get("allow_lockout"):
        check_lockout(change.after, change.packed, change.settings_after["default_action"], environ,
                      _fw_sets.by_tag(change.sets_after))
    return change
