"""The firewall object loaded once per session, with a harness that checks every
verdict, counter and sampled event against the reference classifier."""

import os
import time
from collections import namedtuple

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel, _fw_slots, _layout, _libbpf
from tests.helpers import reference

SHADOW_COUNTS = _layout.SHADOW_NEW_PASSES + 1  # xf_shadow_stats: the reasons, new drops, new passes

# A shadow set as the harness installed it: positions are those of its rules in the rules map
ShadowSet = namedtuple("ShadowSet", "rules default_action counters positions sets")


OBJECT = os.path.join(os.path.dirname(__file__), "..", "..", "build", "bpf", "xdp_firewall.o")
PROGRAM = "xdpfleet_fw"
TEST_RUN_IFINDEX = 1  # BPF_PROG_TEST_RUN runs XDP on the loopback device's queue


class Firewall:
    def __init__(self, bpf_object):
        self.prog_fd = bpf_object.program(PROGRAM).fd
        self.maps = reference.map_fds(bpf_object)
        self.events = _libbpf.RingBuffer(self.maps["xf_events"])
        self.rules, self.default_action, self.counters, self.positions, self.sets = [], "pass", [], [], {}
        self.shadow = None

    def apply(self, rules, default_action, compiler=None, sample_rate=1, sets=None):
        """sets: {name: [ipaddress networks]} of the sets the rules name (see reference.rule_matches)."""
        if compiler:
            compiled = compiler(rules, default_action)
        else:
            compiled = reference.compile_rules(rules, default_action, sets=sets)
        # every rule starts as the module starts a new one: zeroed counters and no rate-limit buckets
        _fw_slots.apply_ruleset(self.maps, compiled, fresh_counters=compiled.counters)
        _fw_slots.set_sample_rate(self.maps, sample_rate)
        self.rules, self.default_action, self.counters, self.sets = rules, default_action, compiled.counters, sets
        self.positions = _positions(compiled)
        self.shadow = None  # the switch ended it

    def install_shadow(self, rules, default_action, sets=None):
        """Installs a shadow set beside the rule set applied, its counter slots after the enforced set's."""
        first = max(self.counters, default=-1) + 1
        compiled = reference.compile_rules(rules, default_action, list(range(first, first + len(rules))), sets=sets)
        _fw_slots.install_shadow(self.maps, compiled, fresh_counters=compiled.counters)
        self.shadow = ShadowSet(rules, default_action, compiled.counters, _positions(compiled), sets)

    def run(self, frame):
        return _libbpf.prog_test_run(self.prog_fd, frame)[0]

    def check(self, frames, now=None):
        """Runs (frame bytes, Packet) pairs; returns a list of mismatches, empty when all agree.

        now: the wall clock the program's xf_clock gives (epoch seconds; default the clock)."""
        now = time.time() if now is None else now
        self.events.consume()
        stats_before = reference.read_stats(self.maps)
        hits_before = reference.read_hits(self.maps, self.counters)
        passed_before = reference.read_hits(self.maps, self.counters, "xf_passed")
        stats = dict((reason, [0, 0]) for reason in _layout.REASONS)
        hits = [[0, 0] for counter in self.counters]
        passed = [[0, 0] for counter in self.counters]
        events, mismatches = [], []
        if self.shadow:
            shadow_before, shadow_hits_before = self._shadow_records()
            shadow_counts = [[0, 0] for index in range(SHADOW_COUNTS)]
            shadow_hits = [[0, 0] for counter in self.shadow.counters]
        for frame, packet in frames:
            expected = reference.classify(self.rules, self.default_action, packet, self.sets, now)
            got = self.run(frame)
            if got != _layout.XDP_ACTIONS[expected.action]:
                mismatches.append("verdict %s, expected %s for %s (frame %s)"
                                  % (_layout.ACTION_NAMES.get(got, got), expected, packet, frame.hex()))
            _add(stats[_layout.REASONS[reference.stats_reason(expected)]], len(frame))
            if expected.position is not None:
                _add(hits[expected.position], len(frame))
            for number in reference.limits_passed(self.rules, expected, packet, self.sets, now):
                _add(passed[number], len(frame))
            if expected.action == "drop":
                events.append(_expected_event(expected, packet, self.counters, self.positions))
            if self.shadow:
                events += self._shadow_expects(shadow_counts, shadow_hits, expected, packet, len(frame), now)
        mismatches += self._stats_mismatches(stats_before, stats)
        mismatches += self._counts_mismatches("hits", hits_before, hits, "xf_hits")
        mismatches += self._counts_mismatches("passed", passed_before, passed, "xf_passed")
        if self.shadow:
            mismatches += self._shadow_mismatches(shadow_before, shadow_counts, shadow_hits_before, shadow_hits)
        got_events = [_comparable(_fw_kernel.decode_event(raw)) for raw in self.events.consume()]
        if got_events != events:
            mismatches.append("events %s, expected %s" % (got_events, events))
        return mismatches

    def _shadow_expects(self, counts, hits, enforced, packet, length, now):
        """Adds what the shadow set must count for one packet (enforced: its verdict); returns the events it must
        send."""
        shadow = self.shadow
        verdict = reference.classify(shadow.rules, shadow.default_action, packet, shadow.sets, now)
        _add(counts[reference.stats_reason(verdict)], length)
        if (verdict.action == "drop") != (enforced.action == "drop"):
            _add(counts[_layout.SHADOW_NEW_DROPS if verdict.action == "drop" else _layout.SHADOW_NEW_PASSES], length)
        if verdict.position is not None:
            _add(hits[verdict.position], length)
        if verdict.action != "drop":
            return []
        return [_expected_event(verdict, packet, shadow.counters, shadow.positions, shadow=True)]

    def _shadow_records(self):
        """(xf_shadow_stats as [(packets, bytes)] by index, xf_shadow_hits of the shadow set's rules)."""
        records = _fw_kernel.PerCpuRecords(self.maps["xf_shadow_stats"], SHADOW_COUNTS)
        stats = [dict(zip(("packets", "bytes"), records.summed(index))) for index in range(SHADOW_COUNTS)]
        return stats, reference.read_hits(self.maps, self.shadow.counters, "xf_shadow_hits")

    def _shadow_mismatches(self, stats_before, counts, hits_before, hits):
        stats_after, hits_after = self._shadow_records()
        mismatches = ["xf_shadow_stats[%d] grew by %s, expected %s" % (index, _delta(before, after), tuple(expected))
                      for index, (before, after, expected) in enumerate(zip(stats_before, stats_after, counts))
                      if _delta(before, after) != tuple(expected)]
        return mismatches + [
            "shadow hits of rule %d grew by %s, expected %s" % (number, _delta(before, after), tuple(expected))
            for number, (before, after, expected) in enumerate(zip(hits_before, hits_after, hits))
            if _delta(before, after) != tuple(expected)]

    def _stats_mismatches(self, stats_before, stats):
        mismatches = []
        stats_after = reference.read_stats(self.maps)
        for reason, (packets, bytes_) in stats.items():
            delta = _delta(stats_before[reason], stats_after[reason])
            if delta != (packets, bytes_):
                mismatches.append("stats[%s] grew by %s, expected %s" % (reason, delta, (packets, bytes_)))
        return mismatches

    def _counts_mismatches(self, what, before, expected, name):
        """Per rule, the growth of its counter slot in `name` against the expected [packets, bytes]."""
        mismatches = []
        after = reference.read_hits(self.maps, self.counters, name)
        for number, (packets, bytes_) in enumerate(expected):
            delta = _delta(before[number], after[number])
            if delta != (packets, bytes_):
                mismatches.append("%s of rule %d grew by %s, expected %s" % (what, number, delta, (packets, bytes_)))
        return mismatches


def _add(record, length):
    record[0] += 1
    record[1] += length


def _delta(before, after):
    return (after["packets"] - before["packets"], after["bytes"] - before["bytes"])


def _positions(compiled):
    return [position for position, rule in enumerate(compiled.rules) if rule != _layout.EMPTY_RULE]


def _expected_event(verdict, packet, counters, positions, shadow=False):
    """The event of a dropped packet; verdict.position is the rule's number, positions the rules' positions in
    the rules map; shadow: a shadow set's would-be drop."""
    ip = packet.kind == "ip"
    return {
        "shadow": shadow,
        "ifindex": TEST_RUN_IFINDEX, "position": None if verdict.position is None else positions[verdict.position],
        "counter": None if verdict.position is None else counters[verdict.position],
        "action": "drop", "reason": _layout.REASONS[reference.stats_reason(verdict)],
        "src": str(packet.src) if ip else None, "dst": str(packet.dst) if ip else None,
        "proto": packet.proto if ip else 0, "dport": packet.dport or 0, "sport": packet.sport or 0,
    }


def _comparable(event):
    """The event fields the reference model determines (malformed frames carry partial fields)."""
    result = dict((key, event[key]) for key in ("ifindex", "position", "counter", "action", "reason", "shadow"))
    if event["reason"] != "malformed" and event["family"]:
        result.update((key, event[key]) for key in ("src", "dst", "proto", "dport", "sport"))
    else:
        result.update(src=None, dst=None, proto=0, dport=0, sport=0)
    return result


@pytest.fixture(scope="session")
def firewall():
    if not os.path.exists(OBJECT):
        pytest.fail("%s is missing: run `make build` (or `make -C bpf`) first" % OBJECT)
    with _libbpf.BpfObject(OBJECT) as bpf_object:
        bpf_object.load()
        harness = Firewall(bpf_object)
        yield harness
        harness.events.close()
