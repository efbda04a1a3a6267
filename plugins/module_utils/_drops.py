# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What xdp_drops reports: the sampled drop events of the firewall's xf_events ring buffer.

The ring buffer's consumer position lives in the map, so a read takes the events not read
before, including those sampled before the read started. Reading consumes them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _facts, _ownership, _rules, _ruleset
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import LinkError

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


def read_records(fd, timeout, count):
    """Raw event records until `count` are read (0: no limit) or `timeout` seconds have passed."""
    records = []
    deadline = time.monotonic() + timeout
    with libbpf.RingBuffer(fd) as ring:
        records.extend(ring.consume())
        while (not count or len(records) < count) and time.monotonic() < deadline:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            records.extend(ring.poll(max(1, min(POLL_SLICE_MS, remaining_ms))))
    return records[:count] if count else records


def _wall_clock_offset():
    """Seconds to add to bpf_ktime_get_ns (CLOCK_MONOTONIC) for the time of day."""
    return time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)


def rule_labels(described, interface, state_dir):
    """({position: rule name}, KernelRuleset or None) of the attached firewall."""
    with _facts.firewall_maps(described) as maps:
        if not maps:
            return {}, None
        kernel = _ruleset.KernelRuleset(maps)
        return _ruleset.read_names(interface, kernel.digest, state_dir), kernel


def event_facts(record, interface, offset, names, kernel):
    event = _rules.decode_event(record)
    number = None if event["position"] is None or not kernel else kernel.number_at(event["position"])
    rule = None if number is None else _ruleset.rule_line(kernel.rule_at(number)[0].to_dict())
    return {
        "time": round(event["timestamp"] / 1e9 + offset, 6),
        "timestamp_ns": event["timestamp"],
        "interface": interface,
        "source": event["src"],
        "destination": event["dst"],
        "protocol": _rules.PROTOCOL_NAMES.get(event["proto"], event["proto"]),
        "source_port": event["sport"],
        "destination_port": event["dport"],
        "action": event["action"],
        "reason": event["reason"],
        "rule_id": None if number is None else number + 1,
        "rule_name": names.get(number),
        "rule": rule,
    }


def read_drops(interface, timeout=1.0, count=0, state_dir=_ruleset.STATE_DIR):
    """{events, sample_rate} of interface: the drops sampled into its ring buffer."""
    try:
        described = _ownership.describe(interface)
    except LinkError as error:
        raise DropsError(str(error))
    fd = libbpf.map_fd_by_id(events_map_id(described, interface))
    try:
        records = read_records(fd, timeout, count)
    finally:
        os.close(fd)
    names, kernel = rule_labels(described, interface, state_dir)
    offset = _wall_clock_offset()
    events = [event_facts(record, interface, offset, names, kernel) for record in records]
    return {"events": events, "sample_rate": kernel.sampling if kernel else None}
