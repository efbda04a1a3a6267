# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The counters of the XDP health monitor (bpf/xdp_monitor.bpf.c), per interface of this network namespace:
XDP exceptions by program and action, failed redirects by error, packets the kernel dropped after XDP by drop
reason. Read-only. The monitor runs as the bpf_program set xdp_monitor; its maps are found by their pins.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket
import struct

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _btf, _hostfs, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf

NAME = "xdp_monitor"
XDP_ACTIONS = {0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}
DROP_REASONS = "skb_drop_reason"  # the kernel's enum; its names are SKB_DROP_REASON_<reason>
REASON_PREFIX = "SKB_DROP_REASON_"
# (map name, what the facts call its counters, key layout, the key's fields after namespace and interface)
MAPS = (("xm_exceptions", "exceptions", struct.Struct("=IIII"), ("prog_id", "action")),
        ("xm_redirects", "redirect_errors", struct.Struct("=IIIi"), ("prog_id", "error")),
        ("xm_drops", "drops", struct.Struct("=III"), ("reason",)))


def _counts(fd, key_layout, cpus):
    """[(key fields, packets summed over every possible CPU)] of a per-CPU hash of u64 counters."""
    info = libbpf.map_info(fd)
    items = libbpf.map_items(fd, key_layout.size, 8 * cpus, info["max_entries"])
    return [(key_layout.unpack(key), sum(struct.unpack("=%dQ" % cpus, value))) for key, value in items]


def _program_name(prog_id, names):
    if prog_id not in names:
        try:
            with _ownership.opened(libbpf.prog_fd_by_id(prog_id)) as fd:
                names[prog_id] = libbpf.prog_info(fd)["name"]
        except libbpf.LibbpfError:
            names[prog_id] = None  # unloaded since
    return names[prog_id]


def _interface(ifindex):
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return str(ifindex)


def _records(name, fields, values, reasons, programs):
    record = dict(zip(fields, values))
    if name == "xm_exceptions":
        record["action"] = XDP_ACTIONS.get(record["action"], record["action"])
    if name == "xm_redirects":
        record["error"] = errno.errorcode.get(record["error"], record["error"])
    if name == "xm_drops":
        record["reason"] = reasons.get(record["reason"], "").replace(REASON_PREFIX, "", 1) or record["reason"]
    if "prog_id" in record:
        record["program"] = _program_name(record["prog_id"], programs)
    return record


def counts(pin_dir=None):
    """{interface: {exceptions, redirect_errors, drops}} of this network namespace, each a list of dicts with
    their packets; None when the monitor is not deployed."""
    pin_dir = pin_dir or _hostfs.default_tracing_pin_dir(NAME)
    if not all(os.path.exists(_hostfs.pin_path(pin_dir, name)) for name, _kind, _layout, _fields in MAPS):
        return None
    netns, cpus = os.stat("/proc/self/ns/net").st_ino, libbpf.num_possible_cpus()
    with _btf.KernelBtf() as btf:
        reasons = btf.enum_names(DROP_REASONS)
    programs, result = {}, {}
    for name, kind, key_layout, fields in MAPS:
        with _ownership.opened(libbpf.obj_get(_hostfs.pin_path(pin_dir, name))) as fd:
            found = _counts(fd, key_layout, cpus)
        for key, packets in sorted(found):
            if key[0] != netns:
                continue
            interface = result.setdefault(_interface(key[1]), of_interface({}, None))
            interface[kind].append(dict(_records(name, fields, key[2:], reasons, programs), packets=packets))
    return result


def of_interface(found, interface):
    """The counters of one interface from counts(); None when the monitor is not deployed."""
    if found is None:
        return None
    return found.get(interface) or dict((kind, []) for _name, kind, _layout, _fields in MAPS)
