# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attach, upgrade and detach an XDP program that takes an interface's hook alone, idempotently; and the
module's entry point, which hands the other ways of taking the hook (O(hook)) to their files.

Everything the module decides is read from the kernel (see _ownership): the attached program,
its maps and the identity record xdpfleet binds to each program it loads. Readying the object itself
(open, size, load with live maps carried over, pin) is _object_load's job.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hook_chain, _hook_dispatcher, _hostfs, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _object_load as loader
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _program_state as state
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import Link, LinkError, ifindex
from ansible_collections.xdpfleet.xdp.plugins.module_utils._object_load import ProgramError

MIN_KERNEL = (5, 10)  # BPF_PROG_BIND_MAP; XDP_FLAGS_REPLACE needs 5.7
RACED = (errno.EEXIST, errno.EBUSY, errno.ENOENT)
DISPATCHER_DEFAULTS = {"priority": 50, "chain_call_actions": ["pass"]}  # libxdp's default run priority


def check_kernel(release):
    """Refuses kernels without atomic XDP replace and BPF_PROG_BIND_MAP."""
    numbers = [int(part) for part in release.split("-")[0].split(".")[:2] if part.isdigit()]
    if tuple(numbers) < MIN_KERNEL:
        raise ProgramError("kernel %s is not supported: xdp_program needs Linux >= %d.%d "
                           "(atomic XDP replace and BPF_PROG_BIND_MAP)" % ((release,) + MIN_KERNEL))


def _attach_mode(described, mode):
    """The mode to attach in; modes cannot be swapped atomically, so a change of mode is refused."""
    if not described["attached"]:
        return mode
    if not state.mode_matches(mode, described["mode"]):
        raise ProgramError("the program on this interface is attached in %s mode; switching to %s mode cannot "
                           "be done atomically: detach it first (state: detached)" % (described["mode"], mode))
    return described["mode"]


def _attach(link, prog_fd, mode, described, force):
    """Attaches (or swaps in) prog_fd; when another tool raced us, re-reads the hook and retries once."""
    for attempt in (1, 2):
        try:
            _swap(link, prog_fd, mode, described)
            return
        except (LinkError, libbpf.LibbpfError) as error:
            if error.errno not in RACED or attempt == 2:
                raise
            described = _ownership.describe_link(link)
            state.check_owner(described, link.interface, force)


def _swap(link, prog_fd, mode, described):
    if not described["attached"]:
        link.attach(prog_fd, mode)
        return
    with _ownership.opened(libbpf.prog_fd_by_id(described["prog_id"])) as old_fd:
        link.attach(prog_fd, mode, old_fd)


def _attach_any_mode(link, prog_fd, mode, described, force):
    """auto: native, falling back to skb (generic) when the driver has no XDP support."""
    if mode != "auto":
        _attach(link, prog_fd, mode, described, force)
        return mode
    try:
        _attach(link, prog_fd, "native", described, force)
        return "native"
    except LinkError as error:
        if error.errno not in loader.UNSUPPORTED:
            raise
    _attach(link, prog_fd, "skb", described, force)
    return "skb"


def _load_and_attach(link, bpf_object, program, request, described, sha256):
    pin_dir, mode = request["pin_dir"], _attach_mode(described, request["mode"])
    schema_version = loader.declared_schema_version(bpf_object)
    reuse_fds = loader.reusable_map_fds(bpf_object, described, pin_dir, request["map_migration"], schema_version)
    try:
        loader.load_object(bpf_object, program, reuse_fds, link.index if mode == "hw" else 0)
    finally:
        loader.close_all(reuse_fds)
    loader.bind_meta(program.fd, sha256, program.name, pin_dir, schema_version)
    existed = loader.prepare_pin_dir(pin_dir)
    try:
        _attach_any_mode(link, program.fd, mode, described, request["force"])
    except LinkError as error:
        if not existed:
            _hostfs.remove_pin_dir_if_empty(pin_dir)
        if mode == "hw" and error.errno in loader.UNSUPPORTED:
            raise ProgramError("interface %s does not support XDP hardware offload (mode hw): %s"
                               % (link.interface, error))
        raise
    loader.pin_object_maps(bpf_object, pin_dir)
    loader.unpin_stale(described, set(m.name for m in bpf_object.maps), pin_dir)


def ensure_attached(request, check_mode):
    """Attaches the object's program unless it is attached already.

    Without `object`, only checks that the program with object_sha256 is attached; when it is not,
    fails with object_required.
    """
    sha256 = loader.object_sha256(request)
    interface = request["interface"]
    with _hostfs.host_lock(interface):
        link = Link(interface)
        before = _ownership.describe_link(link)
        state.check_owner(before, interface, request["force"])
        _attach_mode(before, request["mode"])
        return state.converge(
            request, sha256, before, request["mode"], "attached to %s" % interface,
            lambda bpf_object, program: _load_and_attach(link, bpf_object, program, request, before, sha256),
            lambda: _ownership.describe_link(link), check_mode)


def ensure_detached(request, check_mode):
    with _hostfs.host_lock(request["interface"]):
        link = Link(request["interface"])
        before = _ownership.describe_link(link)
        return state.detach(request, before, lambda: _detach(link, before), check_mode)


def _detach(link, described):
    with _ownership.opened(libbpf.prog_fd_by_id(described["prog_id"])) as old_fd:
        link.detach(described["mode"], old_fd)


def run(params, check_mode):
    """The module's whole job: params are the module options, with pin_dir and object resolved."""
    check_kernel(os.uname()[2])
    libbpf.library()
    request = dict(params, map_sizes=loader.requested_map_sizes(params.get("map_sizes")))
    request.update(_dispatcher_settings(request))
    if loader.uses_bcc(request):
        request["object"] = loader.bcc_source(request)
    default_pin_dir = DEFAULT_PIN_DIRS[request["hook"]]
    request["pin_dir"] = (request.get("pin_dir") or default_pin_dir(request["interface"])).rstrip("/")
    ifindex(request["interface"])  # before the lock, whose file names the interface
    _hostfs.check_pin_dir(request["pin_dir"])
    with loader.inline_object(request) as inline_request:
        return ENSURE[request["hook"]](inline_request, check_mode)


def _dispatcher_settings(request):
    """priority and chain_call_actions: libxdp's defaults with hook: dispatcher; refused with the other hooks."""
    given = [name for name in DISPATCHER_DEFAULTS if request.get(name) is not None]
    if request["hook"] == "dispatcher":
        return dict((name, default if request.get(name) is None else request[name])
                    for name, default in DISPATCHER_DEFAULTS.items())
    if given:
        raise ProgramError("%s: these order the programs in libxdp's dispatcher and apply to hook: dispatcher only, "
                           "not hook: %s; leave them out or set hook: dispatcher" % (", ".join(given), request["hook"]))
    return {}


def _ensure_exclusive(request, check_mode):
    if request["state"] == "detached":
        return ensure_detached(request, check_mode)
    return ensure_attached(request, check_mode)


ENSURE = {"exclusive": _ensure_exclusive, "chained": _hook_chain.ensure, "dispatcher": _hook_dispatcher.ensure}
DEFAULT_PIN_DIRS = {"exclusive": _hostfs.default_pin_dir, "chained": _hook_chain.default_pin_dir,
                    "dispatcher": _hostfs.default_pin_dir}
