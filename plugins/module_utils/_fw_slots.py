# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall's double-buffered rule-set writer: a compiled rule set goes into the inactive slot (only what
differs), one word of xf_config switches to it, and once no packet can still use the slot left, that slot is
rewritten too. Packets see the old rule set or the new one, never a mix (docs/RULES.md)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import itertools
import os
import time
from array import array
from collections import namedtuple

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors, _fw_buckets, _libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_compile import match_digest
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_diff import FEW_DIFFER
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_hosts import EMPTY_BUCKET, bucket_edits
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_kernel import read_config, shadow_slot
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import (
    CLOCK_TICK_NS, CLOCK_WALL_MINUS_BOOT, CONFIG_HEAD, DATAREC, DST_SET, GEN_ENTRIES, HOST_BUCKETS, HOSTS4,
    NO_PREFIX, NO_RULE, PREFIX_MAPS, RULE, SHADOW, SHADOW_NEW_PASSES, SLOT_META, SRC_SET, U32, U64, ZERO_U32)

READ_CHUNK = 8192  # elements per BPF_MAP_LOOKUP_BATCH call when reading a map back
# byte offsets into packed rules and metas
ACTION, FLAGS, FAMILY, SRC_LEN, DST_LEN = (
    RULE.offset[field] for field in ("action", "flags", "family", "src_len", "dst_len"))
SRC, DST = RULE.offset["src"], RULE.offset["dst"]
DEFAULT_ACTION_END = SLOT_META.offset["rules"]  # a meta after its default action
PREFIX_COUNTS = [field for field, _code in SLOT_META.fields].index("prefixes_%s" % PREFIX_MAPS[0])


class SlotsError(_errors.XdpfleetError):
    pass


def write_config(maps, active, rate, metas, shadow=False):
    """Writes xf_config; shadow: the slot other than active holds a shadow set (else the program ignores it)."""
    word = active | (SHADOW if shadow else 0)
    _libbpf.map_update(maps["xf_config"], ZERO_U32, CONFIG_HEAD.pack(word, rate) + metas[0] + metas[1])


def set_sample_rate(maps, rate):
    """1 in `rate` drops go to xf_events; 0 turns sampling off. Takes effect at once."""
    if not 0 <= rate <= 0xFFFFFFFF:
        raise SlotsError("sample rate %r is not 0 (off) or a positive 32-bit number" % (rate,))
    shadow = shadow_slot(maps) is not None
    active, _rate, metas = read_config(maps)
    write_config(maps, active, rate, metas, shadow)


def apply_ruleset(maps, compiled, fresh_counters=(), rules_now=None, sets_changed=False):
    """Writes `compiled` into the inactive slot (only what differs), switches to it, then writes it
    into the slot it left as well.

    Packets see either the old rule set or the new one, never a mix: the program
    reads the active slot once per packet, and the switch changes one word. The slot
    left is rewritten only once no packet can still use it; with both slots alike, the
    next change that keeps every rule's match writes only the rules that change
    (compiled without index maps, see patch_compiled), and the slot left takes the edits
    found for the first slot without being read back. rules_now: {slot: its packed rules}
    for slots whose rules are known, which are then not read back. sets_changed: the prefixes of a set
    changed, so the prefix maps are read back (the rules alone do not say which entries differ).
    """
    set_clock(maps)
    active, rate, metas = read_config(maps)
    target = 1 - active
    rules_now = dict(rules_now or {})
    alike = _slots_alike(maps, metas, rules_now)
    wait_for_packets_in_flight()
    edits = _slot_edits(maps, target, compiled, rules_now.get(target), sets_changed)
    _write_slot(maps, target, compiled, edits, (active, rate, metas))
    reset_counters(maps, fresh_counters)
    write_config(maps, target, rate, metas)
    wait_for_packets_in_flight()
    if not alike:
        edits = _slot_edits(maps, active, compiled, rules_now.get(active), sets_changed)
    _write_slot(maps, active, compiled, edits, (target, rate, metas))


def install_shadow(maps, compiled, fresh_counters=(), inactive_rules=None, sets_changed=False):
    """Writes `compiled` into the inactive slot (only what differs) as a shadow set: the program goes on enforcing
    the active slot, and classifies every packet with the shadow set too, counting into xf_shadow_stats and
    xf_shadow_hits (zeroed here) what it would have done. inactive_rules: the inactive slot's packed rules, when
    known. A shadow set installed before is replaced."""
    set_clock(maps)
    active, rate, metas = read_config(maps)
    target = 1 - active
    edits = _slot_edits(maps, target, compiled, inactive_rules, sets_changed)
    _write_slot(maps, target, compiled, edits, (active, rate, metas))  # its first write stops the shadow
    wait_for_packets_in_flight()
    reset_counters(maps, fresh_counters)
    _zero_records(maps["xf_shadow_hits"], _rule_counters(compiled.rules))
    _zero_records(maps["xf_shadow_stats"], range(SHADOW_NEW_PASSES + 1))
    write_config(maps, active, rate, metas, shadow=True)


def _rule_counters(rules):
    """The hit-counter slots that packed rules (holes included) name."""
    words = memoryview(b"".join(rules)).cast("I")
    return set(words[RULE.offset["counter"] // U32.size::RULE.size // U32.size])


def promote_shadow(maps):
    """Makes the shadow set the enforced one: one word write switches slots and ends the shadow, so a packet sees
    the old rule set or the new one. Raises SlotsError when no shadow set is installed."""
    slot = shadow_slot(maps)
    if slot is None:
        raise SlotsError("no shadow set is installed to promote")
    _active, rate, metas = read_config(maps)
    write_config(maps, slot, rate, metas)
    wait_for_packets_in_flight()


def discard_shadow(maps):
    """Stops the shadow set's classification; True when one was installed."""
    if shadow_slot(maps) is None:
        return False
    active, rate, metas = read_config(maps)
    write_config(maps, active, rate, metas)
    return True


def _slots_alike(maps, metas, rules_now):
    """True when both slots hold one rule set, so that the same edits bring either to a new one: the same
    finished meta and the same packed rules. A slot's meta is final only once all its maps hold what was
    compiled from its rules and default action (see _write_slot), and compiling is a function of those.
    Fills rules_now with the rules read."""
    if metas[0] != metas[1] or metas[0] == UNFINISHED_META:
        return False
    count = SLOT_META.unpack(metas[0]).rules
    for slot in (0, 1):
        known = rules_now.get(slot)
        if known is None or len(known) < count * RULE.size:
            rules_now[slot] = _libbpf.array_values(maps["xf_rules_%d" % slot], RULE.size, count)
    size = count * RULE.size
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
    if metas[target][DEFAULT_ACTION_END:] != meta[DEFAULT_ACTION_END:]:
        return None
    count = SLOT_META.unpack(meta).rules
    inactive = _libbpf.array_values(maps["xf_rules_%d" % target], RULE.size, count)
    # after a switch both slots hold the same rules: then one comparison says so, without the digests
    return (target, inactive) if inactive == raw or match_digest(inactive) == match_digest(raw) else None


# What makes a slot hold a compiled rule set: rules and gen are the positions and indexes to write; prefixes
# is {short map name: (keys to delete, keys to write)} and hosts {host table name: bucket indexes to write},
# or None when compiled carries no index maps.
SlotEdits = namedtuple("SlotEdits", "rules gen prefixes hosts")


def _slot_edits(maps, slot, compiled, rules_now, sets_changed=False):
    """The SlotEdits of one slot, found by reading it back (its rules only when rules_now does not hold
    them). rules_now, when given, are the rules of a slot whose meta is final, so its index maps are
    those compiled from them."""
    rules = _rule_edits(maps["xf_rules_%d" % slot], compiled.rules, rules_now)
    if compiled.prefixes is None:
        return SlotEdits(rules, None, None, None)
    prefixes = None if rules_now is None or sets_changed else _host_prefix_edits(rules_now, compiled, rules)
    if prefixes is None:
        prefixes = dict((name, _prefix_edits(maps["xf_%s_%d" % (name, slot)], compiled.prefixes[name]))
                        for name in PREFIX_MAPS)
    hosts = dict((table, _bucket_edits(maps["xf_%s_%d" % (table, slot)], buckets))
                 for table, buckets in compiled.hosts.items())
    return SlotEdits(rules, _general_edits(maps["xf_gen_%d" % slot], compiled.gen), prefixes, hosts)


TRIE_MAPS = tuple(index for index, name in enumerate(PREFIX_MAPS) if name.endswith("t"))


def _host_prefix_edits(current, compiled, differing):
    """The prefix map edits from a slot holding the index maps compiled from `current` (concatenated packed
    rules by position) to `compiled`, found from the rules at the differing positions alone; None when the
    new set has prefixes shorter than a host's, or a differing rule has one. With host prefixes only, an
    entry's chain holds the rules with its address and nothing else, so only the entries of the rules that
    changed (or moved) can change, and no map needs reading back. differing: positions that may differ."""
    counts = SLOT_META.format.unpack(compiled.meta)[PREFIX_COUNTS:]
    if any(counts[index] for index in TRIE_MAPS):
        return None
    size = RULE.size
    changed = [position for position in differing
               if current[position * size:(position + 1) * size] != compiled.rules[position]]
    left_behind = range(len(compiled.rules), len(current) // size)  # past the new span
    if len(changed) + len(left_behind) > len(compiled.rules) // FEW_DIFFER:
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
    general one; None for a prefix shorter than a host's or a set's rule."""
    if not rule or rule[ACTION] == 0:
        return ()
    if rule[FLAGS] & (SRC_SET | DST_SET):
        return None
    family, side, length, address = rule[FAMILY], "s", rule[SRC_LEN], rule[SRC:]
    if length == NO_PREFIX:
        side, length, address = "d", rule[DST_LEN], rule[DST:]
    if length == NO_PREFIX:
        return ()
    width = 32 if family == 4 else 128
    if length != width:
        return None
    return "%s%dh" % (side, family), address[:width // 8]


def _write_slot(maps, slot, compiled, edits, config):
    """Applies edits to one slot (not the active one): prefix maps, host tables, the general index, then the rules; its
    meta in config (active slot, rate, metas) reads UNFINISHED until all is written."""
    active, rate, metas = config
    metas[slot] = UNFINISHED_META
    write_config(maps, active, rate, metas)
    if edits.prefixes is not None:
        for name, (stale, changed) in edits.prefixes.items():
            fd = maps["xf_%s_%d" % (name, slot)]
            _libbpf.map_delete_batch(fd, stale)
            _libbpf.map_update_batch(fd, changed, [compiled.prefixes[name][key] for key in changed])
        for table, buckets in edits.hosts.items():
            _libbpf.map_update_batch(maps["xf_%s_%d" % (table, slot)], [U32.pack(index) for index in buckets],
                                     [compiled.hosts[table].get(index, EMPTY_BUCKET) for index in buckets])
        _libbpf.map_update_batch(maps["xf_gen_%d" % slot], [U32.pack(index) for index in edits.gen],
                                 [U32.pack(compiled.gen[index]) for index in edits.gen])
        _libbpf.map_update(maps["xf_cond_%d" % slot], ZERO_U32, compiled.cond)
    _libbpf.map_update_batch(maps["xf_rules_%d" % slot], [U32.pack(position) for position in edits.rules],
                             [compiled.rules[position] for position in edits.rules])
    metas[slot] = compiled.meta
    write_config(maps, active, rate, metas)


UNFINISHED_META = SLOT_META.format.pack(0, NO_RULE, *[0] * (2 + len(PREFIX_MAPS)))  # no rule set has NO_RULE rules


def _rule_edits(fd, rules, current=None):
    """The positions in the blocks of RULE_BLOCK positions that differ from current (read when not given):
    comparing a block is cheaper than comparing its rules, and writing an unchanged rule into the inactive
    slot is harmless."""
    size, step = RULE.size, RULE_BLOCK * RULE.size
    wanted = b"".join(rules)
    if current is None:
        current = _libbpf.array_values(fd, size, len(rules))
    return [position for start in range(0, len(wanted), step)
            if current[start:start + step] != wanted[start:start + step]
            for position in range(start // size, min(len(rules), (start + step) // size))]


RULE_BLOCK = 16


CLOCK_MONOTONIC_COARSE = 6  # <linux/time.h>; the time module does not name it
MEMBARRIER_CMD_GLOBAL = 1
MEMBARRIER_SYSCALL = {"x86_64": 324, "aarch64": 283, "ppc64le": 365, "s390x": 356}
BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_ARRAY_OF_MAPS = 2, 12


def wait_for_packets_in_flight():
    """Returns once no packet can still be using the slot that was active before the last switch.

    XDP programs run inside RCU read-side sections, so an RCU grace period is enough, however soon this
    run follows the previous switch. membarrier(MEMBARRIER_CMD_GLOBAL) returns only after one; where it
    cannot (EINVAL on nohz_full hosts, or an architecture whose syscall number is not known here), an
    update of a map-in-map does: the kernel waits for a grace period before it returns, so that user space
    knows every program now sees the new inner map (maybe_wait_bpf_programs in kernel/bpf/syscall.c).
    """
    if not _membarrier_global():
        map_in_map_grace_period()


def _membarrier_global():
    """True when membarrier(MEMBARRIER_CMD_GLOBAL) waited for a grace period; False when it cannot here."""
    number = MEMBARRIER_SYSCALL.get(os.uname().machine)
    if number is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, MEMBARRIER_CMD_GLOBAL, 0) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS):
        return False
    raise SlotsError("membarrier failed: cannot wait for an RCU grace period: %s" % os.strerror(error))


def map_in_map_grace_period():
    """Waits for an RCU grace period by writing into a one-slot array of maps of our own."""
    inner = _libbpf.map_create(BPF_MAP_TYPE_ARRAY, "xf_grace_inner", U32.size, U32.size, 1)
    try:
        outer = _libbpf.map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "xf_grace", U32.size, U32.size, 1, inner_map_fd=inner)
        try:
            _libbpf.map_update(outer, ZERO_U32, U32.pack(inner))
        finally:
            os.close(outer)
    finally:
        os.close(inner)


def _general_edits(fd, table):
    """The indexes of the dense port/protocol index whose entries differ (most rule changes leave the
    general rules alone: then one comparison of the whole array says so)."""
    current = _libbpf.array_values(fd, U32.size, GEN_ENTRIES)
    if current == array("I", table).tobytes():
        return []
    current = memoryview(current).cast("I").tolist()
    return [index for index, (now, first) in enumerate(zip(current, table)) if now != first]


def _bucket_edits(fd, buckets):
    """The indexes of a host table's buckets that differ from buckets (_fw_hosts.host_tables)."""
    return bucket_edits(_libbpf.array_values(fd, HOSTS4.size, HOST_BUCKETS), buckets)


def _prefix_edits(fd, desired):
    """(keys to delete, keys to write) that make a hash or LPM map hold desired."""
    info = _libbpf.map_info(fd)
    current = dict(_libbpf.map_items(fd, info["key_size"], info["value_size"], READ_CHUNK))
    return ([key for key in current if key not in desired],
            [key for key, value in desired.items() if current.get(key) != value])


def reset_counters(maps, counters):
    """Zeroes the hit and rate-limit counters of these slots on every CPU, in one batch each, and forgets the
    rate-limit buckets kept under them."""
    for name in ("xf_hits", "xf_passed"):
        _zero_records(maps[name], counters)
    if counters:
        _fw_buckets.forget(maps, counters)


def _zero_records(fd, indexes):
    """Zeroes these indexes of a per-CPU array of xf_datarec on every CPU, in one batch."""
    zero = bytes(_libbpf.percpu_value_size(DATAREC.size) * _libbpf.num_possible_cpus())
    keys = [U32.pack(index) for index in indexes]
    _libbpf.map_update_batch(fd, keys, [zero] * len(keys))


def set_clock(maps):
    """Writes xf_clock: the wall clock minus the boot clock, by which the program tells a rule's deadline, and
    the length of a jiffy, by which it runs rate limits (the resolution of the coarse clocks)."""
    wall_minus_boot = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    tick_ns = round(time.clock_getres(CLOCK_MONOTONIC_COARSE) * 1e9)
    _libbpf.map_update_batch(maps["xf_clock"], [U32.pack(CLOCK_WALL_MINUS_BOOT), U32.pack(CLOCK_TICK_NS)],
                             [U64.pack(wall_minus_boot), U64.pack(tick_ns)])
