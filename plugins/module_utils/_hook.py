# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every program that runs on an interface's XDP hook, in the order a packet meets them, read from the kernel.

The hook holds one program (the root). When it is an xdpfleet program with a next-program slot (hook: chained),
the program in the slot runs after it. Each program is described by _ownership: owner, identity and maps.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import Link

NEXT_SLOT_MAP = "xf_next"  # the firewall's next-program slot (see _hook_chain)
BPF_MAP_TYPE_PROG_ARRAY = 3
SLOT_KEY = struct.pack("<I", 0)
PROG_ID = struct.Struct("<I")
PLACE_ROOT, PLACE_CHAINED = "root", "chained"
MECHANISM_EXCLUSIVE, MECHANISM_CHAINED = "exclusive", "chained"
LISTED = ("prog_id", "name", "tag", "owner", "program", "object_sha256")


def next_slot_id(root):
    """The map id of a described root program's next-program slot, or None when it has none."""
    for item in root["maps"]:
        if item["name"] == NEXT_SLOT_MAP and item["type"] == BPF_MAP_TYPE_PROG_ARRAY:
            return item["id"]
    return None


def chained_id(slot_fd):
    """The id of the program in the slot, or None when it is empty."""
    value = libbpf.map_lookup(slot_fd, SLOT_KEY, PROG_ID.size)
    return None if value is None else PROG_ID.unpack(value)[0]


def describe_chained(root):
    """The program in a described root's slot, described as the root's hook describes it (the root's mode)."""
    slot_id = next_slot_id(root)
    if slot_id is None:
        return dict(_ownership.NOT_ATTACHED)
    with _ownership.opened(libbpf.map_fd_by_id(slot_id)) as slot_fd:
        prog_id = chained_id(slot_fd)
    return _ownership.describe_program(prog_id, root["mode"]) if prog_id else dict(_ownership.NOT_ATTACHED)


def _listed(described, position, place):
    entry = dict((key, described[key]) for key in LISTED)
    entry.update(position=position, place=place)
    return entry


def hook_programs(root):
    """(mechanism, [(place, described program)...] in run order) of the hook whose program root describes."""
    if not root["attached"]:
        return None, []
    programs = [(PLACE_ROOT, root)]
    if root["owner"] == _ownership.OWNER_XDPFLEET:
        chained = describe_chained(root)
        if chained["attached"]:
            programs.append((PLACE_CHAINED, chained))
            return MECHANISM_CHAINED, programs
    return MECHANISM_EXCLUSIVE, programs


def describe(interface):
    """{"mechanism", "programs": [{position, place, prog_id, name, tag, owner, program, object_sha256}...]} and the
    described programs in run order."""
    mechanism, programs = hook_programs(_ownership.describe_link(Link(interface)))
    listed = [_listed(described, position, place) for position, (place, described) in enumerate(programs)]
    return {"mechanism": mechanism, "programs": listed}, [described for _place, described in programs]
