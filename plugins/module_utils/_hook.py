# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every program that runs on an interface's XDP hook, in the order a packet meets them, read from the kernel.

The hook holds one program (the root). When it is an xdpfleet program with a next-program slot (hook: chained),
the program in the slot runs after it. Each program is described by _ownership: owner, identity and maps.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hook_chain, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import Link

PLACE_ROOT, PLACE_CHAINED = "root", "chained"
MECHANISM_EXCLUSIVE, MECHANISM_CHAINED = "exclusive", "chained"
LISTED = ("prog_id", "name", "tag", "owner", "program", "object_sha256")


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
        chained = _hook_chain.describe_chained(root)
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
