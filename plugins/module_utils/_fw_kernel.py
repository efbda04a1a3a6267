# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall as the kernel holds it, read only: its pinned maps, the active rule set, the per-CPU
counters (summed over every possible CPU) and the sampled drop events."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import contextlib
import hashlib
import ipaddress
import operator
import os
from array import array

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors, _libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import canonical_of_packed, decode_rule
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import (
    ACTION_NAMES, CONFIG_HEAD, CONFIG_SIZE, DATAREC, EVENT, EVENT_SHADOW, MORE_EXPIRES, NO_RULE, REASONS, RULE,
    RULESET_MAPS, SHADOW, SLOT_META, U32, ZERO_U32)

MAP_NAMES = ("xf_config", "xf_hits", "xf_passed", "xf_limits", "xf_limit_slots", "xf_clock") + tuple(
    "xf_%s_%d" % (name, slot) for slot in (0, 1) for name in RULESET_MAPS)


class FirewallMissing(_errors.XdpfleetError):
    pass


@contextlib.contextmanager
def pinned_maps(pin_dir):
    """{map name: fd} of the firewall maps pinned in pin_dir, closed on exit."""
    maps = {}
    try:
        for name in MAP_NAMES:
            path = os.path.join(pin_dir, name)
            if not os.path.exists(path):
                raise FirewallMissing("%s is missing: the xdpfleet firewall is not attached with its maps pinned in "
                                      "%s (attach it with xdpfleet.xdp.xdp_program)" % (path, pin_dir))
            maps[name] = _libbpf.obj_get(path)
        yield maps
    finally:
        for fd in maps.values():
            os.close(fd)


def read_config(maps):
    """(active slot, sample rate, [packed xf_slot_meta of slot 0, slot 1])."""
    raw = _libbpf.map_lookup(maps["xf_config"], ZERO_U32, CONFIG_SIZE)
    active, rate = CONFIG_HEAD.format.unpack_from(raw)
    metas = [raw[CONFIG_HEAD.size + slot * SLOT_META.size:][:SLOT_META.size] for slot in (0, 1)]
    return active & 1, rate, metas


def shadow_slot(maps):
    """The slot that holds a shadow set, or None when the program classifies with the active slot alone."""
    word = CONFIG_HEAD.unpack(_libbpf.map_lookup(maps["xf_config"], ZERO_U32, CONFIG_SIZE)[:CONFIG_HEAD.size]).active
    return (word & 1) ^ 1 if word & SHADOW else None


def ruleset_digest(meta, packed_rules):
    digest = hashlib.sha256(meta)
    digest.update(b"".join(packed_rules))
    return digest.hexdigest()


# bytes.translate: the low byte of xf_rule.more to 1 when it has MORE_EXPIRES, else 0
EXPIRES = bytes(bool(value & MORE_EXPIRES) for value in range(256))


class KernelRuleset:
    """The rule set the program uses now (or the one in another slot): the slot's meta and packed rules. Rules
    are numbered 0, 1, 2... in order; each has a position in the rules map, increasing with the number but with
    holes where rules were removed (see _fw_compile.place_rules)."""

    def __init__(self, maps, slot=None):
        self.maps = maps
        self.active, self.sampling, metas = read_config(maps)
        self.slot = self.active if slot is None else slot
        self.meta = metas[self.slot]
        meta = SLOT_META.unpack(self.meta)
        self.default_action = ACTION_NAMES.get(meta.default_action, "pass") if meta.default_action else "pass"
        self.raw = _libbpf.array_values(maps["xf_rules_%d" % self.slot], RULE.size, meta.rules)
        actions = self.raw[RULE.offset["action"]::RULE.size]  # 0 only in holes
        self.positions = range(meta.rules) if 0 not in actions else [
            position for position, action in enumerate(actions) if action]
        self._packed = self._digest = None

    def __len__(self):
        return len(self.positions)

    def by_position(self):
        """The packed xf_rule at each position, holes included."""
        return [self.raw[offset:offset + RULE.size] for offset in range(0, len(self.raw), RULE.size)]

    @property
    def packed(self):
        """The packed xf_rule of each rule."""
        if self._packed is None:
            size, raw = RULE.size, self.raw
            self._packed = [raw[position * size:(position + 1) * size] for position in self.positions]
        return self._packed

    def rule_at(self, number, set_names=None):
        """(Rule, hit-counter slot) of one rule (set_names as for entries)."""
        return decode_rule(self.packed[number], set_names)

    def number_at(self, position):
        """The number of the rule at this position of the rules map, None for none."""
        number = bisect.bisect_left(self.positions, position)
        return number if number < len(self.positions) and self.positions[number] == position else None

    @property
    def digest(self):
        if self._digest is None:
            self._digest = ruleset_digest(self.meta, [self.raw])
        return self._digest

    def entries(self, set_names=None):
        """The rules as canonical entries (no names: those are not in the kernel; set names where set_names,
        {tag: name}, has them)."""
        return [canonical_of_packed(packed, set_names) for packed in self.packed]

    def has_deadlines(self):
        """True when a rule has a deadline, told by the low byte of each rule's `more` field (little-endian)."""
        return 1 in self.raw[RULE.offset["more"]::RULE.size].translate(EXPIRES)

    def counters(self):
        """The hit-counter slot of each rule, read straight from the packed array."""
        words = memoryview(self.raw).cast("I")[RULE.offset["counter"] // U32.size::RULE.size // U32.size]
        if isinstance(self.positions, range):
            return words.tolist()
        return list(map(words.__getitem__, self.positions))


class FreshRuleset:
    """The rule set of a firewall xdp_program has just attached: no rules, default action pass, sampling off
    (what check mode plans against where the firewall is not attached yet)."""

    default_action, sampling, digest, packed, positions = "pass", 0, None, [], range(0)

    @staticmethod
    def entries(set_names=None):
        return []

    @staticmethod
    def has_deadlines():
        return False


def firewall_pinned(pin_dir):
    return all(os.path.exists(os.path.join(pin_dir, name)) for name in MAP_NAMES)


# --- counters ------------------------------------------------------------------------------------


class PerCpuRecords:
    """xf_datarec values of one per-CPU array, read in one batch: (packets, bytes) by index and CPU."""

    def __init__(self, fd, count):
        cpus = _libbpf.num_possible_cpus()
        self.cpu_words = _libbpf.percpu_value_size(DATAREC.size) // 8  # one CPU's record, padded
        self.stride = self.cpu_words * cpus  # one index's records
        self.words = array("Q", _libbpf.array_values(fd, 8 * self.stride, count)) if count else array("Q")

    def per_cpu(self, index):
        """[(packets, bytes)] of one index, by CPU."""
        record = self.words[self.stride * index:self.stride * (index + 1)]
        return list(zip(record[0::self.cpu_words], record[1::self.cpu_words]))

    def summed(self, index):
        """(packets, bytes) of one index over every possible CPU."""
        record = self.words[self.stride * index:self.stride * (index + 1)]
        return sum(record[0::self.cpu_words]), sum(record[1::self.cpu_words])

    def packets(self):
        """Packets of every index, summed over every possible CPU."""
        total = self.words[0::self.stride]
        for cpu_start in range(self.cpu_words, self.stride, self.cpu_words):
            total = list(map(operator.add, total, self.words[cpu_start::self.stride]))
        return list(total)


def action_stats(fd, per_cpu=False):
    """{reason: {packets, bytes[, per_cpu]}} of xf_stats, summed over every possible CPU."""
    records = PerCpuRecords(fd, len(REASONS))
    stats = {}
    for index, reason in enumerate(REASONS):
        packets, bytes_ = records.summed(index)
        stats[reason] = {"packets": packets, "bytes": bytes_}
        if per_cpu:
            stats[reason]["per_cpu"] = [{"cpu": cpu, "packets": cpu_packets, "bytes": cpu_bytes}
                                        for cpu, (cpu_packets, cpu_bytes) in enumerate(records.per_cpu(index))]
    return stats


def decode_event(raw):
    """A sampled drop from xf_events as a dict."""
    event = EVENT.unpack(raw[:EVENT.size])
    size = 4 if event.family == 4 else 16
    return {
        "timestamp": event.timestamp, "ifindex": event.ifindex,
        "position": None if event.position == NO_RULE else event.position,
        "counter": None if event.counter == NO_RULE else event.counter,
        "family": event.family, "proto": event.proto, "action": ACTION_NAMES[event.action],
        "reason": REASONS[event.reason], "shadow": bool(event.flags & EVENT_SHADOW),
        "sport": event.sport, "dport": event.dport,
        "src": str(ipaddress.ip_address(event.src[:size])) if event.family else None,
        "dst": str(ipaddress.ip_address(event.dst[:size])) if event.family else None,
    }
