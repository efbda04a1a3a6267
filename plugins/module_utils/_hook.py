# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every program that runs on an interface's XDP hook, in the order a packet meets them, read from the kernel.

The hook holds one program (the root). When it is an xdpfleet program with a next-program slot (hook: chained),
the program in the slot runs after it. When it is libxdp's dispatcher (hook: dispatcher), the programs it runs
follow it, in libxdp's run order, each with its priority and chain call actions. Each program is described by
_ownership: owner, identity and maps.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libxdp, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import Link

NEXT_SLOT_MAP = "xf_next"  # the firewall's next-program slot (see _hook_chain)
BPF_MAP_TYPE_PROG_ARRAY = 3
SLOT_KEY = struct.pack("<I", 0)
PROG_ID = struct.Struct("<I")
PLACE_ROOT, PLACE_CHAINED, PLACE_DISPATCHER, PLACE_DISPATCHED = "root", "chained", "dispatcher", "dispatched"
MECHANISM_EXCLUSIVE, MECHANISM_CHAINED, MECHANISM_DISPATCHER = "exclusive", "chained", "dispatcher"
LISTED = ("prog_id", "name", "tag", "owner", "program", "object_sha256")
NOT_DISPATCHED = {"priority": None, "chain_call_actions": None}


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


def _listed(described, position, place, dispatch):
    entry = dict((key, described[key]) for key in LISTED)
    entry.update(position=position, place=place, **dispatch)
    return entry


def _dispatched(dispatcher, mode):
    return [(PLACE_DISPATCHED, _ownership.describe_program(item["prog_id"], mode),
             {"priority": item["priority"], "chain_call_actions": item["chain_call_actions"]})
            for item in dispatcher["programs"]]


def hook_programs(interface, root):
    """(mechanism, [(place, described program, its dispatcher settings)...] in run order) of the hook of
    interface, whose program root describes."""
    if not root["attached"]:
        return None, []
    if root["owner"] == _ownership.OWNER_XDPFLEET:
        chained = describe_chained(root)
        if chained["attached"]:
            return MECHANISM_CHAINED, [(PLACE_ROOT, root, NOT_DISPATCHED), (PLACE_CHAINED, chained, NOT_DISPATCHED)]
    else:
        dispatcher = _libxdp.dispatcher_programs(interface)
        if dispatcher and dispatcher["dispatcher_id"] == root["prog_id"]:
            return MECHANISM_DISPATCHER, ([(PLACE_DISPATCHER, root, NOT_DISPATCHED)]
                                          + _dispatched(dispatcher, root["mode"]))
    return MECHANISM_EXCLUSIVE, [(PLACE_ROOT, root, NOT_DISPATCHED)]


def describe(interface):
    """{"mechanism", "programs": [{position, place, prog_id, name, tag, owner, program, object_sha256, priority,
    chain_call_actions}...]} and the described programs, in run order."""
    mechanism, programs = hook_programs(interface, _ownership.describe_link(Link(interface)))
    listed = [_listed(described, position, place, dispatch)
              for position, (place, described, dispatch) in enumerate(programs)]
    return {"mechanism": mechanism, "programs": listed}, [described for _place, described, _dispatch in programs]
