# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What xdp_facts reports: per interface the attached program (from the kernel alone), the
firewall's per-action and per-rule counters summed over all possible CPUs, and the host's
BPF/XDP capabilities. Read-only: nothing here writes to the kernel or to disk.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import heapq
import itertools
import operator
import os
from array import array
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs, _link, _ownership, _rules, _ruleset
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError

FIREWALL_MAPS = ("xf_config", "xf_stats", "xf_hits", "xf_rules_0", "xf_rules_1")
NETDEV_XDP_ACT_BASIC = 1 << 0
NETDEV_XDP_ACT_HW_OFFLOAD = 1 << 4
SYS_NET = "/sys/class/net"


class FactsError(XdpfleetError):
    pass


# --- capabilities -----------------------------------------------------------------------------

def _read_text(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def capabilities():
    jit = _read_text("/proc/sys/net/core/bpf_jit_enable")
    return {
        "kernel": os.uname()[2],
        "btf": os.path.exists("/sys/kernel/btf/vmlinux"),
        "jit_enabled": jit is not None and jit != "0",
        "bpffs_mounted": _hostfs.bpffs_mounted(),
        "possible_cpus": libbpf.num_possible_cpus(),
        "online_cpus": os.cpu_count(),
    }


def xdp_modes(features):
    """Attach modes an interface takes: generic (skb) always; native and hw as the driver says."""
    modes = ["skb"]
    if features & NETDEV_XDP_ACT_BASIC:
        modes.insert(0, "native")
    if features & NETDEV_XDP_ACT_HW_OFFLOAD:
        modes.append("hw")
    return modes


# --- counters ---------------------------------------------------------------------------------

def _datarecs(raw, cpus):
    """[(packets, bytes) per CPU] of one per-CPU xf_datarec value."""
    words = array("Q", raw[:16 * cpus])
    return list(zip(words[0::2], words[1::2]))


def _summed(records):
    return {"packets": sum(record[0] for record in records), "bytes": sum(record[1] for record in records)}


def action_stats(fd, per_cpu):
    """{reason: {packets, bytes[, per_cpu]}} of xf_stats, summed over every possible CPU."""
    cpus = libbpf.num_possible_cpus()
    stats = {}
    for index, reason in enumerate(_rules.REASONS):
        records = _datarecs(libbpf.map_lookup(fd, _rules.U32.pack(index), 16 * cpus), cpus)
        stats[reason] = _summed(records)
        if per_cpu:
            stats[reason]["per_cpu"] = [{"cpu": cpu, "packets": packets, "bytes": bytes_}
                                        for cpu, (packets, bytes_) in enumerate(records)]
    return stats


class HitCounters:
    """xf_hits slots 0..count-1, read in one batch, summed over every possible CPU."""

    def __init__(self, fd, count):
        self.cpus = libbpf.num_possible_cpus()
        self.words = array("Q", libbpf.array_values(fd, 16 * self.cpus, count)) if count else array("Q")

    def packets(self):
        """Packets of every slot; bytes are summed only for the slots reported (see slot)."""
        stride = 2 * self.cpus
        total = self.words[0::stride]
        for cpu in range(1, self.cpus):
            total = list(map(operator.add, total, self.words[2 * cpu::stride]))
        return total

    def slot(self, slot):
        """(packets, bytes) of one slot."""
        record = self.words[2 * self.cpus * slot:2 * self.cpus * (slot + 1)]
        return sum(record[0::2]), sum(record[1::2])


def most_hit(packets_at, top):
    """Positions of the `top` largest counts, equal counts in position order (as a stable sort gives).

    Ranks only the positions with hits, as most rules of a large set have none."""
    positions = range(len(packets_at))
    ranked = heapq.nlargest(top, itertools.compress(positions, packets_at), key=packets_at.__getitem__)
    if len(ranked) < top:
        unhit = itertools.compress(positions, map(operator.not_, packets_at))
        ranked += itertools.islice(unhit, top - len(ranked))
    return ranked


def top_rules(kernel, names, top):
    """The `top` rules with the most hits: position, name, match text, action, packets, bytes."""
    counters = kernel.counters()
    hits = HitCounters(kernel.maps["xf_hits"], max(counters) + 1 if counters else 0)
    result = []
    for position in most_hit(list(map(hits.packets().__getitem__, counters)), top):
        rule, counter = kernel.rule_at(position)
        packets, bytes_ = hits.slot(counter)
        result.append({"position": position + 1, "name": names.get(position), "rule": _ruleset.rule_line(rule.to_dict()),
                       "action": rule.action, "counter": counter, "packets": packets, "bytes": bytes_})
    return result


# --- one interface --------------------------------------------------------------------------

@contextlib.contextmanager
def firewall_maps(described):
    """{name: fd} of the firewall maps of the attached program (by id, so pins are not needed)."""
    ids = dict((item["name"], item["id"]) for item in described["maps"])
    fds = {}
    try:
        if all(name in ids for name in FIREWALL_MAPS):
            for name in FIREWALL_MAPS:
                fds[name] = libbpf.map_fd_by_id(ids[name])
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def firewall_facts(maps, interface, per_cpu, top, state_dir):
    kernel = _ruleset.KernelRuleset(maps)
    return {
        "firewall": True,
        "rule_count": len(kernel),
        "default_action": kernel.default_action,
        "sample_rate": kernel.sampling,
        "active_slot": kernel.active,
        "stats": action_stats(maps["xf_stats"], per_cpu),
        "top_rules": top_rules(kernel, _ruleset.read_names(interface, kernel.digest, state_dir), top),
    }


EMPTY_FIREWALL = {"firewall": False, "rule_count": None, "default_action": None, "sample_rate": None,
                  "active_slot": None, "stats": {}, "top_rules": []}


def interface_facts(interface, per_cpu=False, top=10, state_dir=_ruleset.STATE_DIR):
    described = _ownership.describe(interface)
    facts = dict((key, described[key]) for key in ("attached", "prog_id", "name", "tag", "mode", "owner",
                                                   "object_sha256", "program", "pin_dir", "map_schema_version"))
    facts["maps"] = [{"name": item["name"], "id": item["id"]} for item in described["maps"]]
    facts.update(EMPTY_FIREWALL)
    with firewall_maps(described) as maps:
        if maps:
            facts.update(firewall_facts(maps, interface, per_cpu, top, state_dir))
    return facts


def interface_names():
    try:
        return sorted(os.listdir(SYS_NET))
    except OSError:
        return []


def gather(interfaces=None, per_cpu=False, top=10, modes=True, state_dir=_ruleset.STATE_DIR):
    """ansible_facts.xdp: {capabilities, interfaces: {name: facts}}."""
    if top < 0:
        raise FactsError("top_rules must be 0 or more, not %d" % top)
    libbpf.library()
    try:
        indexes = dict((name, _link.ifindex(name)) for name in
                       interfaces or [name for name in interface_names() if name != "lo"])
        with ThreadPoolExecutor(max_workers=1) as pool:
            # the query's imports run while this thread waits for the kernel to copy out the maps
            query = pool.submit(_link.xdp_features, list(indexes.values())) if modes else None
            result = {"capabilities": capabilities(),
                      "interfaces": dict((name, interface_facts(name, per_cpu, top, state_dir)) for name in indexes)}
        features = query.result() if query else None
        for name, index in indexes.items():
            result["interfaces"][name]["xdp_modes"] = xdp_modes(features[index]) if features is not None else None
    except _link.LinkError as error:
        raise FactsError(str(error))
    return result
