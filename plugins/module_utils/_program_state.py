# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A program xdpfleet manages as the kernel describes it (see _ownership), whichever way it takes the hook: whose
it is, whether it is the one asked for, and the module result with its diff.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _object_load as loader
from ansible_collections.xdpfleet.xdp.plugins.module_utils._object_load import ProgramError


def _summary(described, map_sizes):
    summary = dict((key, described[key]) for key in ("prog_id", "name", "tag", "mode", "object_sha256",
                                                     "map_schema_version"))
    if map_sizes:
        live = _live_sizes(described)
        summary["map_sizes"] = dict((name, live.get(name)) for name in map_sizes)
    return summary


def _live_sizes(described):
    return dict((item["name"], item["max_entries"]) for item in described["maps"])


def check_owner(described, interface, force):
    if described["owner"] == _ownership.OWNER_FOREIGN and not force:
        raise ProgramError("interface %s has an XDP program that xdpfleet did not attach (id %d, name %s); "
                           "set force: true to replace it" % (interface, described["prog_id"], described["name"]))


def mode_matches(requested, attached):
    return requested == attached or (requested == "auto" and attached in ("native", "skb"))


def is_current(described, sha256, program, mode, pin_dir, map_sizes):
    live_sizes = _live_sizes(described)
    return (described["owner"] == _ownership.OWNER_XDPFLEET and described["object_sha256"] == sha256
            and program in (None, described["program"]) and mode_matches(mode, described["mode"])
            and described["pin_dir"] == pin_dir
            and all(live_sizes.get(name) == size for name, size in map_sizes.items()))


def predicted(described, bpf_object, program_name, mode, sha256, map_sizes):
    predicted = {"prog_id": None, "name": program_name[:libbpf.OBJ_NAME_LEN - 1], "tag": None,
                 "mode": described["mode"] if described["attached"] and mode == "auto" else mode,
                 "object_sha256": sha256, "map_schema_version": loader.declared_schema_version(bpf_object)}
    if map_sizes:
        predicted["map_sizes"] = dict(map_sizes)
    return predicted


def result(changed, interface, before, after_described, map_sizes, after=None):
    result = dict((key, after_described[key]) for key in ("prog_id", "tag", "mode", "object_sha256", "program",
                                                          "owner", "pin_dir", "map_schema_version", "maps"))
    result.update(changed=changed, interface=interface,
                  diff={"before": _summary(before, map_sizes), "after": after or _summary(after_described, map_sizes)})
    return result


def restore_pins(described, interface, pin_dir, map_sizes, check_mode):
    """The right program is attached; pins lost (say, bpffs remounted) are put back from the kernel."""
    lost = _ownership.missing_pins(described, pin_dir)
    if lost and not check_mode:
        loader.prepare_pin_dir(pin_dir)
        loader.pin_by_id(lost, pin_dir)
    return result(bool(lost), interface, described, described, map_sizes)


def pins_to_remove(described, pin_dir):
    """(directory, name) of every pin xdpfleet made for this interface."""
    pins = set()
    if described["owner"] == _ownership.OWNER_XDPFLEET and described["pin_dir"]:
        pins.update((described["pin_dir"], item["name"]) for item in described["maps"]
                    if loader.is_pinned(described["pin_dir"], item))
    if _hostfs.bpffs_mounted() and pin_dir.startswith(_hostfs.PIN_ROOT + "/"):
        pins.update((pin_dir, name) for name in _hostfs.pinned_names(pin_dir))
    return sorted(pins)


def remove_pins(pins, pin_dir):
    """Removes the (directory, name) pins, then their directories and pin_dir (a program without maps made it
    and left it empty) where they hold nothing any more."""
    for directory, name in pins:
        _hostfs.unpin(directory, name)
    for directory in set([pin_dir] + [directory for directory, _name in pins]):
        _hostfs.remove_pin_dir_if_empty(directory)


def detach(request, before, take_out, check_mode):
    """What every way of taking the hook does to detach: take_out() removes `before` (described, when attached)
    from its place, then every pin xdpfleet made for it goes."""
    interface = request["interface"]
    if before["attached"]:
        check_owner(before, interface, request["force"])
    pins = pins_to_remove(before, request["pin_dir"])
    changed = before["attached"] or bool(pins)
    if changed and not check_mode:
        if before["attached"]:
            take_out()
        remove_pins(pins, request["pin_dir"])
    detached = result(changed, interface, before, dict(_ownership.NOT_ATTACHED) if changed else before, {})
    detached["pins_removed"] = [_hostfs.pin_path(directory, name) for directory, name in pins]
    return detached


def converge(request, sha256, before, mode, where, load, described_after, check_mode):
    """What every way of taking the hook does to attach, once the caller has checked that it may replace `before`
    (described): when that is the program asked for, only lost pins are put back; otherwise the object is opened
    and, outside check mode, load(bpf_object, program) puts its program in place. `mode`: the mode it runs in;
    `where`: its place in messages ("attached to eth0"); described_after(): the program in place, described."""
    interface, pin_dir, map_sizes = request["interface"], request["pin_dir"], request["map_sizes"]
    if is_current(before, sha256, request["program"], mode, pin_dir, map_sizes):
        return restore_pins(before, interface, pin_dir, map_sizes, check_mode)
    if not request.get("object"):
        raise ProgramError("the program %s is not the one of object_sha256 %s; pass object or src to load it"
                           % (where, sha256), object_required=True)
    with loader.open_object(request, before) as bpf_object:
        program = loader.select_program(bpf_object, request["program"])
        loader.apply_map_sizes(bpf_object, map_sizes)
        if check_mode:
            return result(True, interface, before, before, map_sizes,
                          predicted(before, bpf_object, program.name, mode, sha256, map_sizes))
        load(bpf_object, program)
    return result(True, interface, before, described_after(), map_sizes)
