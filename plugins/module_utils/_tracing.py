# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bpf_program: attach, upgrade and detach the tracing programs of an object, idempotently.

Each program runs through a BPF link pinned at <pin_dir>/links/<program>, so it keeps running after the module
exits; its maps are pinned at <pin_dir>/<map>, where xdp_map finds them. What runs is read from the kernel
(_tracing_state). No tracing link type can swap its program in place (BPF_LINK_UPDATE is for XDP, cgroup, iter
and struct_ops links), so an upgrade attaches the new programs first, then renames each new link's pin over the
old one, which detaches the old link: no event goes unseen in between.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _object_load as loader
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _tracing_kinds as kinds
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _tracing_state as state
from ansible_collections.xdpfleet.xdp.plugins.module_utils._object_load import ProgramError

NEW_PIN_PREFIX = "new-"  # bpffs refuses names with a dot; no C function name has a hyphen


def _pin_dir(params):
    pin_dir = params.get("pin_dir") or _hostfs.default_tracing_pin_dir(params["name"])
    _hostfs.check_pin_dir(pin_dir)
    return pin_dir


def _summary(programs, pin_dir):
    return {"programs": [dict((key, program[key]) for key in
                              ("name", "link_id", "link_type", "prog_id", "tag", "object_sha256"))
                         for program in programs],
            "maps": [{"name": item["name"], "id": item["id"]} for item in state.maps_of(programs)],
            "object_sha256": programs[0]["object_sha256"] if programs else None, "pin_dir": pin_dir}


def _diff(before, after_sha256, after_names):
    return {"before": {"object_sha256": before["object_sha256"],
                       "programs": [program["name"] for program in before["programs"]]},
            "after": {"object_sha256": after_sha256, "programs": sorted(after_names)}}


def run(params, check_mode=False):
    pin_dir = _pin_dir(params)
    with _hostfs.host_lock("tracing-%s" % os.path.basename(pin_dir)):
        current = state.describe(pin_dir)
        if params["state"] == "detached":
            return _detach(current, pin_dir, check_mode)
        return _attach(params, current, pin_dir, check_mode)


def _attach(params, current, pin_dir, check_mode):
    sha256 = loader.object_sha256(params)
    before = _summary(current, pin_dir)
    with libbpf.BpfObject(params["object"]) as bpf_object:
        programs = kinds.select(bpf_object, params.get("programs"))
        names = [program.name for program in programs]
        kinds.check_kernel_features(programs)
        check_map_names(bpf_object)
        if state.is_current(current, names, sha256, pin_dir):
            return dict(before, changed=False, diff=_diff(before, sha256, names))
        if check_mode:
            return dict(before, changed=True, diff=_diff(before, sha256, names))
        _load(bpf_object, programs, current, pin_dir, params.get("map_migration") or "keep")
        for program in programs:
            loader.bind_meta(program.fd, sha256, program.name, pin_dir, loader.declared_schema_version(bpf_object))
        _swap_in(bpf_object, programs, current, pin_dir)
    after = state.describe(pin_dir)
    return dict(_summary(after, pin_dir), changed=True, diff=_diff(before, sha256, names))


def check_map_names(bpf_object):
    """Refuses map names the kernel would cut short: the maps are found again by their kernel names."""
    long_names = [bpf_map.name for bpf_map in bpf_object.maps
                  if not _ownership.is_internal_map(bpf_map.name) and len(bpf_map.name) >= libbpf.OBJ_NAME_LEN]
    if long_names:
        raise ProgramError("the kernel keeps the first %d characters of a map's name, so maps %s of %s would not be "
                           "found again by name; shorten their names in the source"
                           % (libbpf.OBJ_NAME_LEN - 1, ", ".join(long_names), bpf_object.path))


def _load(bpf_object, programs, current, pin_dir, migration):
    chosen = set(program.name for program in programs)
    for program in bpf_object.programs:
        program.set_autoload(program.name in chosen)
    reuse = loader.reusable_map_fds(bpf_object, state.as_loaded(current, pin_dir), pin_dir, migration,
                                    loader.declared_schema_version(bpf_object))
    try:
        for bpf_map in bpf_object.maps:
            if bpf_map.name in reuse:
                bpf_map.reuse_fd(reuse[bpf_map.name])
        bpf_object.load()
    except libbpf.LibbpfError as error:
        reason = kinds.refusal(error, programs)
        if reason:
            raise ProgramError(reason)
        tail = error.log.strip().splitlines()
        raise ProgramError("the kernel rejected the tracing programs of %s (%s); end of the verifier log:\n%s"
                           % (bpf_object.path, error, "\n".join(tail[-loader.VERIFIER_LINES_IN_MESSAGE:])),
                           verifier_log=tail)
    finally:
        loader.close_all(reuse)


def _swap_in(bpf_object, programs, current, pin_dir):
    """Attaches every program, then pins the new links over the old ones and the maps; a failure before the pins
    leaves what ran before running."""
    loader.prepare_pin_dir(pin_dir)
    if any(kinds.kind_of(program.section) == "tracepoint" for program in programs):
        _hostfs.mount_tracefs()
    _hostfs.make_pin_dir(os.path.join(pin_dir, state.LINKS_DIR))
    links = []
    try:
        for program in programs:
            links.append((program.name, program.attach()))
        for name, link in links:
            temporary = state.link_pin(pin_dir, NEW_PIN_PREFIX + name)
            _hostfs.unpin(os.path.dirname(temporary), os.path.basename(temporary))
            link.pin(temporary)
            os.rename(temporary, state.link_pin(pin_dir, name))
    finally:
        for _name, link in links:
            link.close()
    kept = set(name for name, _link in links)
    for program in current:
        if program["name"] not in kept:
            _hostfs.unpin(os.path.join(pin_dir, state.LINKS_DIR), program["name"])
    loader.pin_object_maps(bpf_object, pin_dir)
    loader.unpin_stale(state.as_loaded(current, pin_dir),
                       set(bpf_map.name for bpf_map in bpf_object.maps), pin_dir)


def _detach(current, pin_dir, check_mode):
    before = _summary(current, pin_dir)
    links_dir = os.path.join(pin_dir, state.LINKS_DIR)
    pins = [os.path.join(links_dir, name) for name in _hostfs.pinned_names(links_dir)]
    pins += [_hostfs.pin_path(pin_dir, name) for name in _hostfs.pinned_names(pin_dir)]
    result = dict(_summary([], pin_dir), changed=bool(pins), pins_removed=sorted(pins), diff=_diff(before, None, []))
    if check_mode or not pins:
        return result
    for path in pins:
        os.unlink(path)
    _remove_dirs(pin_dir)
    held = state.describe(pin_dir)
    if held:
        raise ProgramError("the pins are removed but links %s still run: another process holds them open"
                           % ", ".join(str(program["link_id"]) for program in held))
    return result


def _remove_dirs(pin_dir):
    """Removes the links directory, pin_dir and its parents up to the xdpfleet root, while they are empty."""
    directories = [os.path.join(pin_dir, state.LINKS_DIR), pin_dir]
    while directories[-1].startswith(_hostfs.PIN_ROOT + "/"):
        directories.append(os.path.dirname(directories[-1]))
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:
            return
