# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What xdp_drops reports: the sampled drop events of the firewall's xf_events ring buffer.

The ring buffer's consumer position lives in the map, so a read takes the events not read
before, including those sampled before the read started. Reading consumes them; a peek (check
mode) reads the same events and leaves them, and the consumer position, as they were.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import mmap
import os
import struct
import time

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _facts, _hook, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_kernel import KernelRuleset, decode_event, shadow_slot
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import PROTOCOL_NAMES, rule_line
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import STATE_DIR, index_of, read_names, read_shadow

EVENTS_MAP = "xf_events"
POLL_SLICE_MS = 100


class DropsError(XdpfleetError):
    pass


def events_map_id(described, interface):
    ids = dict((item["name"], item["id"]) for item in described["maps"])
    if EVENTS_MAP not in ids:
        raise DropsError("interface %s has no xdpfleet firewall attached (no %s map): %s"
                         % (interface, EVENTS_MAP, "nothing attached" if not described["attached"]
                            else "program %s" % described["name"]))
    return ids[EVENTS_MAP]


class RingPeek(object):
    """Records of a BPF ring buffer map, read without consuming them: read-only mappings of what libbpf's
    reader maps (the consumer position's page; the producer position's page, then the data pages twice
    over, so that no record wraps), and a read position of its own that nobody else sees.
    Same interface as libbpf.RingBuffer."""

    HEADER = struct.Struct("=II")  # record length with the busy and discard bits, page offset
    BUSY_BIT = 1 << 31
    DISCARD_BIT = 1 << 30
    POSITION = struct.Struct("=Q")

    def __init__(self, map_fd, limit=0):
        size = libbpf.map_info(map_fd)["max_entries"]
        self._mask = size - 1
        self._consumer = mmap.mmap(map_fd, mmap.PAGESIZE, prot=mmap.PROT_READ)
        self._ring = mmap.mmap(map_fd, mmap.PAGESIZE + 2 * size, prot=mmap.PROT_READ, offset=mmap.PAGESIZE)
        self._position = self._consumer_position()
        self._left = limit or None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._consumer.close()
        self._ring.close()

    def _consumer_position(self):
        return self.POSITION.unpack_from(self._consumer)[0]

    def _pending(self):
        return self.POSITION.unpack_from(self._ring)[0] > self._position

    def consume(self):
        """The committed records after the ones returned before (up to the limit)."""
        found = []  # (position, record)
        end = self.POSITION.unpack_from(self._ring)[0]
        while self._position < end and len(found) != self._left:
            offset = mmap.PAGESIZE + (self._position & self._mask)
            length = self.HEADER.unpack_from(self._ring, offset)[0]
            if length & self.BUSY_BIT:
                break
            size = length & ~(self.BUSY_BIT | self.DISCARD_BIT)
            if not length & self.DISCARD_BIT:
                start = offset + self.HEADER.size
                found.append((self._position, self._ring[start:start + size]))
            self._position += (self.HEADER.size + size + 7) & ~7
        # Another reader may have consumed records read here meanwhile, and the producer reused their space.
        consumed = self._consumer_position()
        self._position = max(self._position, consumed)
        records = [record for position, record in found if position >= consumed]
        if self._left is not None:
            self._left -= len(records)
        return records

    def poll(self, timeout_ms):
        """Like consume(), after waiting up to timeout_ms for a record."""
        if not self._pending():
            time.sleep(timeout_ms / 1000.0)
        return self.consume()


def read_records(fd, timeout, count, consume=True):
    """Raw event records until `count` are read (0: no limit) or `timeout` seconds have passed;
    with consume=False they stay in the ring buffer."""
    records = []
    deadline = time.monotonic() + timeout
    with (libbpf.RingBuffer if consume else RingPeek)(fd, limit=count) as ring:
        records.extend(ring.consume())
        while (not count or len(records) < count) and time.monotonic() < deadline:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            records.extend(ring.poll(max(1, min(POLL_SLICE_MS, remaining_ms))))
    return records


def _wall_clock_offset():
    """Seconds to add to bpf_ktime_get_ns (CLOCK_MONOTONIC) for the time of day."""
    return time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)


def rule_labels(described, interface, state_dir):
    """{False: labels of the enforced rule set, True: those of the shadow set}; labels: ({position: rule name},
    KernelRuleset), or ({}, None) where there is no such rule set."""
    labels = {False: ({}, None), True: ({}, None)}
    with _facts.firewall_maps(described) as maps:
        if maps:
            kernel = KernelRuleset(maps)
            labels[False] = read_names(interface, kernel.digest, state_dir), kernel
            slot = shadow_slot(maps)
            if slot is not None:
                shadow = KernelRuleset(maps, slot)
                labels[True] = index_of(read_shadow(interface, shadow.digest, state_dir)).names, shadow
    return labels


def event_facts(record, interface, offset, labels):
    """A sampled drop as xdp_drops reports it; labels: those of rule_labels."""
    event = decode_event(record)
    names, kernel = labels[event["shadow"]]
    number = None if event["position"] is None or not kernel else kernel.number_at(event["position"])
    rule = None if number is None else rule_line(kernel.rule_at(number)[0].to_dict())
    return {
        "time": round(event["timestamp"] / 1e9 + offset, 6),
        "timestamp_ns": event["timestamp"],
        "interface": interface,
        "source": event["src"],
        "destination": event["dst"],
        "protocol": PROTOCOL_NAMES.get(event["proto"], event["proto"]),
        "source_port": event["sport"],
        "destination_port": event["dport"],
        "action": event["action"],
        "reason": event["reason"],
        "shadow": event["shadow"],
        "rule_id": None if number is None else number + 1,
        "rule_name": names.get(number),
        "rule": rule,
    }


def read_drops(interface, timeout=1.0, count=0, consume=True, state_dir=STATE_DIR):
    """{events, sample_rate} of interface: the drops sampled into its ring buffer, taken out of it
    unless consume=False."""
    _listing, programs = _hook.describe(interface)
    firewall = _facts.firewall_position(programs)
    described = programs[firewall or 0] if programs else dict(_ownership.NOT_ATTACHED)
    fd = libbpf.map_fd_by_id(events_map_id(described, interface))
    try:
        records = read_records(fd, timeout, count, consume)
    finally:
        os.close(fd)
    labels = rule_labels(described, interface, state_dir)
    offset = _wall_clock_offset()
    events = [event_facts(record, interface, offset, labels) for record in records]
    kernel = labels[False][1]
    return {"events": events, "sample_rate": kernel.sampling if kernel else None}
