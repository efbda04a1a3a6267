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
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_buckets, _fw_confirm, _hook, _hostfs, _link
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _monitor, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_kernel import (
    KernelRuleset, PerCpuRecords, action_stats, shadow_slot)
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import ACTION_CODES, ACTION_NAMES, rule_line
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_sets import tag_names
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_shadow import SHADOW_MAPS, shadow_counts
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import (
    STATE_DIR, index_of, read_index, read_shadow)
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import MORE_EXPIRES, RATE_LIMIT, RULE

FIREWALL_MAPS = ("xf_config", "xf_stats", "xf_hits", "xf_rules_0", "xf_rules_1")
RATE_LIMIT_MAPS = ("xf_passed", "xf_limits", "xf_limit_slots")  # absent from objects before map schema version 3
NETDEV_XDP_ACT_BASIC = 1 << 0
NETDEV_XDP_ACT_HW_OFFLOAD = 1 << 4
SYS_NET = "/sys/class/net"
JIT_SYSCTL = "/proc/sys/net/core/bpf_jit_enable"


class FactsError(XdpfleetError):
    pass


# --- capabilities -----------------------------------------------------------------------------

def _read_text(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def jit_enabled(interfaces):
    """The net.core.bpf_jit_enable setting. It exists in the initial network namespace only: elsewhere an
    attached program that was JIT-compiled tells the JIT is on, and without one it is not known (None)."""
    setting = _read_text(JIT_SYSCTL)
    if setting is not None:
        return setting != "0"
    for facts in interfaces:
        if facts["attached"]:
            with _ownership.opened(libbpf.prog_fd_by_id(facts["prog_id"])) as fd:
                if libbpf.prog_info(fd)["jited"]:
                    return True
    return None


def capabilities(interfaces):
    """The host's BPF/XDP capabilities; `interfaces` are the gathered interface facts."""
    return {
        "kernel": os.uname()[2],
        "btf": os.path.exists("/sys/kernel/btf/vmlinux"),
        "jit_enabled": jit_enabled(interfaces),
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

def most_hit(packets_at, top):
    """Positions of the `top` largest counts, equal counts in position order (as a stable sort gives).

    Ranks only the positions with hits, as most rules of a large set have none."""
    positions = range(len(packets_at))
    ranked = heapq.nlargest(top, itertools.compress(positions, packets_at), key=packets_at.__getitem__)
    if len(ranked) < top:
        unhit = itertools.compress(positions, map(operator.not_, packets_at))
        ranked += itertools.islice(unhit, top - len(ranked))
    return ranked


def hit_records(kernel, name="xf_hits"):
    """The hit counters of every rule of the rule set (in xf_shadow_hits for a shadow set), read once for the facts
    that need them."""
    counters = kernel.counters()
    return PerCpuRecords(kernel.maps[name], max(counters) + 1 if counters else 0)


def top_rules(kernel, index, top, hits):
    """The `top` rules with the most hits: position, name, match text, action, packets, bytes (index: the
    _fw_store.Index of the rule set; hits: hit_records)."""
    set_names = tag_names(index.sets)
    result = []
    for number in most_hit(list(map(hits.packets().__getitem__, kernel.counters())), top):
        rule, counter, summary = _rule_summary(kernel, index, number, set_names)
        packets, bytes_ = hits.summed(counter)
        summary.update(action=rule.action, counter=counter, packets=packets, bytes=bytes_)
        result.append(summary)
    return result


def rule_counters(kernel, index, hits, limit):
    """The hit counters of every rule, for the textfile's series: {"rules": [{name, rule, action, packets, bytes}] of
    the first `limit` rules in rule-set order, "others": {action: {rules, packets, bytes}} summed over the rules
    after them (read from their action byte and counters only, so a large set costs little)."""
    set_names, counters = tag_names(index.sets), kernel.counters()
    rules = []
    for number in range(min(limit, len(counters))):
        rule, counter, summary = _rule_summary(kernel, index, number, set_names)
        packets, bytes_ = hits.summed(counter)
        rules.append({"name": summary["name"], "rule": summary["rule"], "action": rule.action, "packets": packets,
                      "bytes": bytes_})
    actions = kernel.raw[RULE.offset["action"]::RULE.size]
    others = {}
    for number in range(limit, len(counters)):
        figures = others.setdefault(ACTION_NAMES[actions[kernel.positions[number]]],
                                    {"rules": 0, "packets": 0, "bytes": 0})
        packets, bytes_ = hits.summed(counters[number])
        figures["rules"] += 1
        figures["packets"] += packets
        figures["bytes"] += bytes_
    return {"rules": rules, "others": others}


DROPPING = (ACTION_CODES["drop"], ACTION_CODES["rate_limit"])


def drops_by_origin(kernel, hits, stats):
    """(rule_drops, default_action_drops): the packets the rules dropped (drop rules' hits and rate limits' limited
    packets) and the rest of the drop verdict, which the default action gave. The counters are read one after the
    other while packets flow, so the rest is clamped at 0."""
    packets, actions = hits.packets(), kernel.raw[RULE.offset["action"]::RULE.size]
    rule_drops = sum(packets[counter] for position, counter in zip(kernel.positions, kernel.counters())
                     if actions[position] in DROPPING)
    return rule_drops, max(stats["drop"]["packets"] - rule_drops, 0)


def _positions_where(kernel, field, test):
    """The rule numbers whose packed byte at this field's offset passes test."""
    column = kernel.raw[RULE.offset[field]::RULE.size]
    return [number for number, position in enumerate(kernel.positions) if test(column[position])]


def _rule_summary(kernel, index, number, set_names):
    rule, counter = kernel.rule_at(number, set_names)
    return rule, counter, {"position": number + 1, "name": index.names.get(number), "rule": rule_line(rule.to_dict())}


def rate_limits(kernel, index, maps, hits):
    """Each rate-limit rule: its position, name, text, the packets and bytes it let on (passed) and dropped
    (limited: its hits), and the sources (or prefixes) it tracks a bucket for."""
    numbers = _positions_where(kernel, "action", RATE_LIMIT.__eq__)
    if not numbers or not all(name in maps for name in RATE_LIMIT_MAPS):
        return []
    set_names, counters = tag_names(index.sets), kernel.counters()
    passed = PerCpuRecords(maps["xf_passed"], max(counters[number] for number in numbers) + 1)
    tracked = _fw_buckets.tracked(maps)
    result = []
    for number in numbers:
        _rule, counter, summary = _rule_summary(kernel, index, number, set_names)
        (passed_packets, passed_bytes), (limited_packets, limited_bytes) = passed.summed(counter), hits.summed(counter)
        summary.update(passed={"packets": passed_packets, "bytes": passed_bytes},
                       limited={"packets": limited_packets, "bytes": limited_bytes}, sources=tracked[counter])
        result.append(summary)
    return result


def expiring_rules(kernel, index, now=None):
    """Each rule with a deadline: its position, name, text, expires_at and the seconds left (0 once passed: the
    data plane no longer matches it, and the next xdp_rules run removes it)."""
    now = time.time() if now is None else now
    set_names = tag_names(index.sets)
    result = []
    for number in _positions_where(kernel, "more", lambda more: more & MORE_EXPIRES):
        rule, _counter, summary = _rule_summary(kernel, index, number, set_names)
        summary.update(expires_at=rule.to_dict()["expires_at"], seconds_left=max(0, int(rule.expires_at - now)))
        result.append(summary)
    return result


# --- one interface --------------------------------------------------------------------------

@contextlib.contextmanager
def firewall_maps(described):
    """{name: fd} of the firewall maps of the attached program (by id, so pins are not needed); the rate-limit
    and shadow maps where the program has them."""
    ids = dict((item["name"], item["id"]) for item in described["maps"])
    fds = {}
    try:
        if all(name in ids for name in FIREWALL_MAPS):
            for name in FIREWALL_MAPS + tuple(name for name in RATE_LIMIT_MAPS + SHADOW_MAPS if name in ids):
                fds[name] = libbpf.map_fd_by_id(ids[name])
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def firewall_facts(maps, interface, per_cpu, top, state_dir, series=None):
    kernel = KernelRuleset(maps)
    index = read_index(interface, kernel.digest, state_dir)
    hits = hit_records(kernel)
    stats = action_stats(maps["xf_stats"], per_cpu)
    rule_drops, default_action_drops = drops_by_origin(kernel, hits, stats)
    facts = {
        "firewall": True,
        "rule_count": len(kernel),
        "default_action": kernel.default_action,
        "sample_rate": kernel.sampling,
        "active_slot": kernel.active,
        "stats": stats,
        "rule_drops": rule_drops,
        "default_action_drops": default_action_drops,
        "top_rules": top_rules(kernel, index, top, hits),
        "rate_limits": rate_limits(kernel, index, maps, hits),
        "expiring_rules": expiring_rules(kernel, index),
        "sets": index.sets,
        "shadow": shadow_facts(maps, interface, top, state_dir),
    }
    if series is not None:
        facts["rule_counters"] = rule_counters(kernel, index, hits, series)
    return facts


def shadow_facts(maps, interface, top, state_dir):
    """The shadow set beside the enforced one, None without one: its rules, what it would have done with the
    packets it classified (see _fw_shadow.shadow_counts) and its most hit rules."""
    slot = shadow_slot(maps) if all(name in maps for name in SHADOW_MAPS) else None
    if slot is None:
        return None
    kernel = KernelRuleset(maps, slot)
    document = read_shadow(interface, kernel.digest, state_dir)
    index = index_of(document)
    facts = {"rule_count": len(kernel), "default_action": kernel.default_action,
             "installed_at": document.get("installed_at"),
             "top_rules": top_rules(kernel, index, top, hit_records(kernel, "xf_shadow_hits"))}
    facts.update(shadow_counts(maps["xf_shadow_stats"]))
    return facts


EMPTY_FIREWALL = {"firewall": False, "rule_count": None, "default_action": None, "sample_rate": None,
                  "active_slot": None, "stats": {}, "rule_drops": None, "default_action_drops": None, "top_rules": [],
                  "rate_limits": [], "expiring_rules": [], "sets": {}, "shadow": None, "counted_by": None}


def firewall_position(programs):
    """The run position of the first xdpfleet firewall among described programs, None without one."""
    for position, described in enumerate(programs):
        names = set(item["name"] for item in described["maps"])
        if all(name in names for name in FIREWALL_MAPS):
            return position
    return None


def interface_facts(interface, per_cpu=False, top=10, state_dir=STATE_DIR, series=None):
    """The facts of the program attached to the interface, of every program on its hook, and of the xdpfleet
    firewall among them (the first in run order; its counters are the firewall's figures); with `series`,
    its rule_counters for that many rules too."""
    hook, programs = _hook.describe(interface)
    described = programs[0] if programs else dict(_ownership.NOT_ATTACHED)
    facts = dict((key, described[key]) for key in ("attached", "prog_id", "name", "tag", "mode", "owner",
                                                   "object_sha256", "program", "pin_dir", "map_schema_version"))
    facts["maps"] = [{"name": item["name"], "id": item["id"]} for item in described["maps"]]
    facts["hook"] = hook
    facts.update(EMPTY_FIREWALL)
    firewall = firewall_position(programs)
    if firewall is not None:
        with firewall_maps(programs[firewall]) as maps:
            facts.update(firewall_facts(maps, interface, per_cpu, top, state_dir, series))
        counted_by = hook["programs"][firewall]
        facts["counted_by"] = dict((key, counted_by[key]) for key in ("position", "place", "prog_id", "name"))
    facts["revert"] = _fw_confirm.status(interface, state_dir)
    return facts


def interface_names():
    try:
        return sorted(os.listdir(SYS_NET))
    except OSError:
        return []


def gather(interfaces=None, per_cpu=False, top=10, modes=True, state_dir=STATE_DIR, series=None):
    """ansible_facts.xdp: {capabilities, interfaces: {name: facts}}; with `series`, each firewall's rule_counters
    (see rule_counters) for that many rules."""
    if top < 0:
        raise FactsError("top_rules must be 0 or more, not %d" % top)
    if series is not None and series < 0:
        raise FactsError("textfile_rules must be 0 or more, not %d" % series)
    libbpf.library()
    indexes = dict((name, _link.ifindex(name)) for name in
                   interfaces or [name for name in interface_names() if name != "lo"])
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the query's imports run while this thread waits for the kernel to copy out the maps
        query = pool.submit(_link.xdp_features, list(indexes.values())) if modes else None
        interfaces = dict((name, interface_facts(name, per_cpu, top, state_dir, series)) for name in indexes)
        result = {"capabilities": capabilities(interfaces.values()), "interfaces": interfaces}
    features = query.result() if query else None
    monitor = _monitor.counts()
    for name, index in indexes.items():
        result["interfaces"][name]["xdp_modes"] = xdp_modes(features[index]) if features is not None else None
        result["interfaces"][name]["monitor"] = _monitor.of_interface(monitor, name)
    return result
