# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hook: dispatcher: the program takes its place in libxdp's multi-program dispatcher, beside the programs
other tools attached through libxdp (xdp-loader, xdp-filter), in the order of their run priorities.

Each change is one atomic swap of the dispatcher, made by libxdp: adding a program, removing one. An
upgrade adds the new version beside the old one, then removes the old one, so every packet meets one of
them; a packet that the first version passes while both are in the dispatcher also meets the second
(libxdp has no swap that replaces one program by another), and is counted twice. Which program is ours
is read from the kernel: the identity record (_ownership) bound to each program xdpfleet loads.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import functools
import os

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libxdp as libxdp
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _object_load as loader
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _program_state as state
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import ifindex
from ansible_collections.xdpfleet.xdp.plugins.module_utils._object_load import ProgramError

FALLBACK = ("use hook: chained instead (the xdpfleet firewall holds the hook and tail-calls this program from "
            "its next-program slot), or hook: exclusive")
TEST_FUNCTION = "xdp_pass"  # the program of xdp-dispatcher.o libxdp itself probes the kernel with


class DispatcherUnavailable(ProgramError):
    """The dispatcher cannot run on this host; raised before anything is touched."""

    def __init__(self, reason):
        super(DispatcherUnavailable, self).__init__(
            "hook: dispatcher cannot run on this host: %s. Nothing was changed; %s" % (reason, FALLBACK),
            dispatcher={"available": False, "reason": reason})


# --- can the dispatcher run here -----------------------------------------------------------

def extension_refusal(err):
    """The reason given when the kernel refuses to load an extension program with errno err."""
    return ("the kernel refuses extension programs (BPF_PROG_TYPE_EXT, freplace), which is how libxdp's dispatcher "
            "runs each program: loading one failed with %s (%s)%s"
            % (errno.errorcode.get(err, str(err)), os.strerror(err),
               "; with an empty verifier log this is the kernel's policy (on some kernels every trampoline-based "
               "program, freplace, fentry and fexit alike, is refused), not the program" if err == errno.EPERM
               else ""))


def kernel_refusal(dispatcher_object):
    """Why the kernel cannot run libxdp's dispatcher, or None: libxdp's own check, made here before anything is
    touched, because libxdp, when its check fails, attaches a single program without a dispatcher instead."""
    with libbpf.BpfObject(dispatcher_object) as target, libbpf.BpfObject(dispatcher_object) as extension:
        for bpf_object in (target, extension):
            for program in bpf_object.programs:
                program.set_autoload(program.name == TEST_FUNCTION)
        try:
            target.load()
        except libbpf.LibbpfError as error:
            return "the kernel refuses libxdp's own XDP program (%s): %s" % (dispatcher_object, error)
        probe = extension.program(TEST_FUNCTION)
        probe.set_extension_of(target.program(TEST_FUNCTION).fd, TEST_FUNCTION)
        try:
            extension.load()
        except libbpf.LibbpfError as error:
            return extension_refusal(error.errno)
        try:
            os.close(libbpf.raw_tracepoint_open(probe.fd))
        except libbpf.LibbpfError as error:
            return ("the kernel loads extension programs but refuses to attach one (%s)"
                    % errno.errorcode.get(error.errno, str(error.errno)))
    return None


@functools.lru_cache(maxsize=1)
def unavailable_reason():
    """Why hook: dispatcher cannot run on this host (libxdp missing or too old, the kernel), or None."""
    try:
        libxdp.library()
    except libxdp.LibxdpMissing as error:
        return str(error)
    path = libxdp.dispatcher_object()
    if path is None:
        return ("libxdp's xdp-dispatcher.o is in none of %s (nor in $%s): reinstall the libxdp package"
                % (", ".join(libxdp.OBJECT_DIRECTORIES), libxdp.OBJECT_PATH_VARIABLE))
    return kernel_refusal(path)


def require_dispatcher():
    reason = unavailable_reason()
    if reason:
        raise DispatcherUnavailable(reason)


# --- reading the hook ----------------------------------------------------------------------

def _hook(interface):
    """(hook, ours): the dispatcher as _libxdp.dispatcher_programs() gives it, and our programs in it described."""
    hook = libxdp.dispatcher_programs(interface)
    if hook is None:
        return None, []
    ours = []
    for entry in hook["programs"]:
        described = _ownership.describe_program(entry["prog_id"], hook["mode"])
        if described["owner"] == _ownership.OWNER_XDPFLEET:
            ours.append(dict(described, priority=entry["priority"], chain_call_actions=entry["chain_call_actions"]))
    return hook, ours


def _refuse_a_lone_program(link_index, interface):
    """libxdp can add beside a dispatcher only; a program attached alone must go first (it may be ours)."""
    dispatcher = libxdp.Dispatcher.of(link_index)
    if dispatcher is None:
        return
    with dispatcher:
        if not dispatcher.is_legacy:
            return
        described = _ownership.describe_program(dispatcher.main_id, dispatcher.mode)
    raise ProgramError("interface %s holds XDP program %d (%s, owner %s) alone, not through libxdp's dispatcher, so "
                       "nothing can be added beside it; detach it first (for an xdpfleet program: state: detached "
                       "with hook: exclusive), or load it with xdp-loader" % (
                           interface, described["prog_id"], described["name"], described["owner"]))


# --- decisions ---------------------------------------------------------------------------

def requested_actions(names):
    """chain_call_actions in libxdp's order, each once."""
    return [name for name in libxdp.ACTIONS if name in set(names)]


def is_current(described, sha256, request):
    """Whether our program in the dispatcher is the requested one: what is current for every hook (object,
    program, pin_dir, map sizes; its mode is the dispatcher's), and the same priority and chain-call actions."""
    return (state.is_current(described, sha256, request["program"], "auto", request["pin_dir"], request["map_sizes"])
            and described["priority"] == request["priority"]
            and described["chain_call_actions"] == requested_actions(request["chain_call_actions"]))


def attach_mode(hook, requested):
    """The mode to add in: the dispatcher's when there is one (a dispatcher cannot change mode atomically)."""
    if requested == "hw":
        raise ProgramError("hook: dispatcher cannot run in mode hw: libxdp's dispatcher is not offloaded; use "
                           "mode auto, native or skb")
    if hook is None:
        return requested
    if requested not in ("auto", hook["mode"]):
        raise ProgramError("the dispatcher on this interface runs in %s mode; mode %s would need it detached "
                           "first (every program in it with it): use mode auto or %s" % (
                               hook["mode"], requested, hook["mode"]))
    return hook["mode"]


def _view(described):
    return dict((key, described[key]) for key in ("prog_id", "name", "object_sha256", "priority",
                                                  "chain_call_actions"))


def _diff_side(hook, ours):
    return {"dispatcher": hook["programs"] if hook else [], "xdpfleet": [_view(item) for item in ours]}


def _predicted(hook, stale, program_name, sha256, request):
    """The dispatcher after the change, as check mode tells it: ours in the place of its priority."""
    stale_ids = set(item["prog_id"] for item in stale)
    entry = {"prog_id": None, "priority": request["priority"],
             "chain_call_actions": requested_actions(request["chain_call_actions"])}
    kept = [item for item in (hook["programs"] if hook else []) if item["prog_id"] not in stale_ids]
    ours = {"prog_id": None, "name": program_name[:libbpf.OBJ_NAME_LEN - 1], "object_sha256": sha256,
            "priority": request["priority"], "chain_call_actions": entry["chain_call_actions"]}
    return {"dispatcher": sorted(kept + [entry], key=lambda item: item["priority"]), "xdpfleet": [ours]}


def _result(changed, interface, before, after_hook, after_ours, after=None):
    result = {"changed": changed, "interface": interface, "hook": "dispatcher",
              "dispatcher": dict(after_hook or {}, available=True),
              "diff": {"before": before, "after": after or _diff_side(after_hook, after_ours)}}
    current = after_ours[0] if after_ours else dict(_ownership.NOT_ATTACHED, priority=None, chain_call_actions=None)
    for key in ("prog_id", "tag", "mode", "object_sha256", "program", "owner", "pin_dir", "map_schema_version",
                "maps", "priority", "chain_call_actions"):
        result[key] = current[key]
    return result


# --- acting --------------------------------------------------------------------------------

def _add(link_index, bpf_object, program, request, mode):
    """Adds the program (libxdp loads it as an extension) in one dispatcher swap; returns the mode it runs in."""
    with libxdp.Program.from_bpf_object(bpf_object, program) as added:
        added.configure(request["priority"], requested_actions(request["chain_call_actions"]))
        if mode != "auto":
            added.attach(link_index, mode)
            return mode
        try:
            added.attach(link_index, "native")
            return "native"
        except libxdp.LibxdpError as error:
            if error.errno not in loader.UNSUPPORTED:
                raise
        added.attach(link_index, "skb")
        return "skb"


def _remove(link_index, prog_ids):
    """Removes our programs by id, one dispatcher swap each."""
    for prog_id in prog_ids:
        dispatcher = libxdp.Dispatcher.of(link_index)
        if dispatcher is None:
            return
        with dispatcher:
            for program in dispatcher.programs():
                if program.id == prog_id:
                    program.detach(link_index, dispatcher.mode)


def _load_beside(link_index, bpf_object, program, request, hook, stale, sha256):
    """The new version joins the dispatcher with the live maps of the old one, then the old one leaves."""
    pin_dir = request["pin_dir"]
    mode = attach_mode(hook, request["mode"])
    previous = stale[0] if stale else dict(_ownership.NOT_ATTACHED)
    schema_version = loader.declared_schema_version(bpf_object)
    reuse_fds = loader.reusable_map_fds(bpf_object, previous, pin_dir, request["map_migration"], schema_version)
    existed = loader.prepare_pin_dir(pin_dir)  # libxdp keeps its dispatcher's links in bpffs too
    try:
        loader.prepare_load(bpf_object, program, reuse_fds)
        _add(link_index, bpf_object, program, request, mode)
    except libxdp.LibxdpError as error:
        if not existed:
            _hostfs.remove_pin_dir_if_empty(pin_dir)
        raise ProgramError("cannot add program %s of %s to the dispatcher on %s: %s"
                           % (program.name, bpf_object.path, request["interface"], error))
    finally:
        loader.close_all(reuse_fds)
    loader.bind_meta(program.fd, sha256, program.name, pin_dir, schema_version)
    _remove(link_index, [item["prog_id"] for item in stale])
    loader.pin_object_maps(bpf_object, pin_dir)
    loader.unpin_stale(previous, set(m.name for m in bpf_object.maps), pin_dir)


def ensure_attached(request, check_mode):
    sha256 = loader.object_sha256(request)
    interface = request["interface"]
    with _hostfs.host_lock(interface):
        link_index = ifindex(interface)
        hook, ours = _hook(interface)
        if hook is None:  # a dispatcher running here already shows that one can
            require_dispatcher()
            _refuse_a_lone_program(link_index, interface)
        ours = [item for item in ours if item["pin_dir"] == request["pin_dir"]]
        current = [item for item in ours if is_current(item, sha256, request)][:1]
        stale = [item for item in ours if item not in current]
        before = _diff_side(hook, ours)
        if current:
            attach_mode(hook, request["mode"])
            if stale and not check_mode:
                _remove(link_index, [item["prog_id"] for item in stale])
                hook, ours = _hook(interface)
            return _result(bool(stale), interface, before, hook, current)
        if not request.get("object"):
            raise ProgramError("the dispatcher on %s holds no xdpfleet program of object_sha256 %s; pass object or "
                               "src to load it" % (interface, sha256), object_required=True)
        with loader.open_object(request, stale[0] if stale else dict(_ownership.NOT_ATTACHED)) as bpf_object:
            program = loader.select_program(bpf_object, request["program"])
            loader.apply_map_sizes(bpf_object, request["map_sizes"])
            if check_mode:
                attach_mode(hook, request["mode"])
                return _result(True, interface, before, hook, ours,
                               _predicted(hook, stale, program.name, sha256, request))
            _load_beside(link_index, bpf_object, program, request, hook, stale, sha256)
        hook, ours = _hook(interface)
        return _result(True, interface, before, hook,
                       [item for item in ours if item["pin_dir"] == request["pin_dir"]])


def ensure_detached(request, check_mode):
    """Removes our programs from the dispatcher (the last one out detaches it) and their pins; leaves the
    programs of other tools in place."""
    try:
        libxdp.library()
    except libxdp.LibxdpMissing as error:
        raise DispatcherUnavailable(str(error))
    interface, pin_dir = request["interface"], request["pin_dir"]
    with _hostfs.host_lock(interface):
        link_index = ifindex(interface)
        hook, ours = _hook(interface)
        ours = [item for item in ours if item["pin_dir"] == pin_dir]
        pins = state.pins_to_remove(dict(_ownership.NOT_ATTACHED), pin_dir)
        changed = bool(ours or pins)
        if changed and not check_mode:
            _remove(link_index, [item["prog_id"] for item in ours])
            state.remove_pins(pins, pin_dir)
        before = _diff_side(hook, ours)
        if changed and not check_mode:
            hook, ours = _hook(interface)
        elif changed:
            stale_ids = set(item["prog_id"] for item in ours)
            hook = dict(hook, programs=[item for item in hook["programs"] if item["prog_id"] not in stale_ids]) \
                if hook else None
            ours = []
        result = _result(changed, interface, before, hook, [item for item in ours if item["pin_dir"] == pin_dir])
        result["pins_removed"] = [_hostfs.pin_path(directory, name) for directory, name in pins]
        return result


def ensure(request, check_mode):
    """hook: dispatcher, state attached or detached."""
    if request["state"] == "detached":
        return ensure_detached(request, check_mode)
    return ensure_attached(request, check_mode)
