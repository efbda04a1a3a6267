# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rate-limit buckets the program keeps, in its two maps (xf_limit_slots in front, xf_limits for the rest:
bpf/xdp_firewall.h): how many each counter slot has, and forgetting those of counter slots given to new rules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import contextlib
import mmap
from array import array

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import LIMIT_KEY, LIMIT_SLOT, LIMIT_STATE, OWNER_IPV6, U32

READ_CHUNK = 8192  # xf_limits elements per BPF_MAP_LOOKUP_BATCH call
FREE_SLOT = bytes(LIMIT_SLOT.size)


@contextlib.contextmanager
def _mapped_slots(fd):
    """xf_limit_slots mapped into memory (it is BPF_F_MMAPABLE): a copy of 2 MB instead of a batch read."""
    length = _libbpf.map_info(fd)["max_entries"] * LIMIT_SLOT.size
    slots = mmap.mmap(fd, -(-length // mmap.PAGESIZE) * mmap.PAGESIZE)
    try:
        yield slots
    finally:
        slots.close()


def _slot_owners(slots):
    """The owner word of every slot, by index (0: free)."""
    return array("Q", slots[:])[::LIMIT_SLOT.size // 8]


def _owner_counter(owner):
    return ((owner >> 32) & ~OWNER_IPV6) - 1


def _lru_keys(fd):
    """{key: its counter slot} of every bucket xf_limits holds."""
    return dict((key, U32.unpack_from(key)[0])
                for key, _state in _libbpf.map_items(fd, LIMIT_KEY.size, LIMIT_STATE.size, READ_CHUNK))


def tracked(maps):
    """{counter slot: buckets kept for it}."""
    counted = collections.Counter(_lru_keys(maps["xf_limits"]).values())
    with _mapped_slots(maps["xf_limit_slots"]) as slots:
        counted.update(_owner_counter(owner) for owner in _slot_owners(slots) if owner)
    return counted


def forget(maps, counters):
    """Frees the buckets of these counter slots, so that a rule given one starts with full buckets."""
    counters = set(counters)
    _libbpf.map_delete_batch(maps["xf_limits"], [key for key, counter in _lru_keys(maps["xf_limits"]).items()
                                                 if counter in counters])
    with _mapped_slots(maps["xf_limit_slots"]) as slots:
        for index, owner in enumerate(_slot_owners(slots)):
            if owner and _owner_counter(owner) in counters:
                slots[index * LIMIT_SLOT.size:(index + 1) * LIMIT_SLOT.size] = FREE_SLOT
