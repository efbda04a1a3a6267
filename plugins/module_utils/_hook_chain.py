# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hook: chained. A program in the next-program slot of the xdpfleet program attached to an interface (the
root), which tail-calls it for every packet it passes.

The slot is the root's one-entry program array NEXT_SLOT_MAP. Putting a program there is one map update, so an
upgrade is atomic for packets: each runs either the old program or the new one, after the root. The slot holds
a program while the root's maps are pinned; detaching the root empties it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _object_load as loader
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _program_state as state
from ansible_collections.xdpfleet.xdp.plugins.module_utils._hook import (
    NEXT_SLOT_MAP, PROG_ID, SLOT_KEY, describe_chained, next_slot_id)
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import Link
from ansible_collections.xdpfleet.xdp.plugins.module_utils._object_load import ProgramError

PIN_SUBDIRECTORY = "next"


def default_pin_dir(interface):
    return "%s/%s" % (_hostfs.default_pin_dir(interface), PIN_SUBDIRECTORY)


def _root_slot(link):
    """(described root, slot map id); refuses a hook without an xdpfleet root that has a slot."""
    root = _ownership.describe_link(link)
    if not root["attached"] or root["owner"] != _ownership.OWNER_XDPFLEET:
        holder = "nothing" if not root["attached"] else "a program xdpfleet did not attach (%s)" % root["name"]
        raise ProgramError("hook: chained puts the program behind the xdpfleet firewall on %s, but its XDP hook holds "
                           "%s: attach the firewall first (xdpfleet.xdp.xdp_program with hook: exclusive)"
                           % (link.interface, holder))
    slot_id = next_slot_id(root)
    if slot_id is None:
        raise ProgramError("the program attached to %s (%s) has no next-program slot (a program array named %s): "
                           "attach a firewall built with one (role xdpfleet.xdp.firewall: xdp_firewall_next_slot: "
                           "true; the firewall built by bcc has none)" % (link.interface, root["name"], NEXT_SLOT_MAP))
    return root, slot_id


def _check_mode(request, root):
    if not state.mode_matches(request["mode"], root["mode"]):
        raise ProgramError("hook: chained runs the program in its root's mode (%s on %s), not %s: leave mode out"
                           % (root["mode"], request["interface"], request["mode"]))


def _load_into_slot(slot_fd, bpf_object, program, request, before, sha256):
    pin_dir = request["pin_dir"]
    schema_version = loader.declared_schema_version(bpf_object)
    reuse_fds = loader.reusable_map_fds(bpf_object, before, pin_dir, request["map_migration"], schema_version)
    try:
        loader.load_object(bpf_object, program, reuse_fds, 0)
    finally:
        loader.close_all(reuse_fds)
    loader.bind_meta(program.fd, sha256, program.name, pin_dir, schema_version)
    loader.prepare_pin_dir(pin_dir)
    try:
        libbpf.map_update(slot_fd, SLOT_KEY, PROG_ID.pack(program.fd))
    except libbpf.LibbpfError as error:
        raise ProgramError("the kernel refused program %s in the next-program slot of %s (%s): a chained program "
                           "must be an XDP program loaded like its root (same XDP multi-buffer support)"
                           % (program.name, request["interface"], error))
    loader.pin_object_maps(bpf_object, pin_dir)
    loader.unpin_stale(before, set(m.name for m in bpf_object.maps), pin_dir)


def ensure_attached(request, check_mode):
    """Loads the object's program into the slot unless it is there already."""
    sha256 = loader.object_sha256(request)
    interface = request["interface"]
    with _hostfs.host_lock(interface):
        root, slot_id = _root_slot(Link(interface))
        _check_mode(request, root)
        with _ownership.opened(libbpf.map_fd_by_id(slot_id)) as slot_fd:
            before = describe_chained(root)
            state.check_owner(before, interface, request["force"])
            return state.converge(
                request, sha256, before, root["mode"], "chained on %s" % interface,
                lambda bpf_object, program: _load_into_slot(slot_fd, bpf_object, program, request, before, sha256),
                lambda: describe_chained(root), check_mode)


def ensure_detached(request, check_mode):
    """Empties the slot and removes the chained program's pins. Without a root nothing is chained: only pins."""
    with _hostfs.host_lock(request["interface"]):
        root = _ownership.describe_link(Link(request["interface"]))
        before = describe_chained(root) if root["owner"] == _ownership.OWNER_XDPFLEET else dict(
            _ownership.NOT_ATTACHED)
        return state.detach(request, before, lambda: _empty_slot(root), check_mode)


def _empty_slot(root):
    with _ownership.opened(libbpf.map_fd_by_id(next_slot_id(root))) as slot_fd:
        libbpf.map_delete(slot_fd, SLOT_KEY)


def ensure(request, check_mode):
    if request["state"] == "detached":
        return ensure_detached(request, check_mode)
    return ensure_attached(request, check_mode)
