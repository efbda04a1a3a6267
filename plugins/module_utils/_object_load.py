# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An XDP object made ready on a host, whichever way its program then takes the hook: opened (with libbpf,
or compiled by bcc), its maps sized, loaded with the live maps of the program it replaces carried over,
bound to its identity record (_ownership) and its maps pinned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import contextlib
import errno
import os
import tempfile

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError, listed

BPF_MAP_TYPE_ARRAY = 2
UNSUPPORTED = (errno.EOPNOTSUPP, errno.EINVAL, 524)  # 524: ENOTSUPP inside the kernel
VERIFIER_LINES_IN_MESSAGE = 12
INLINE_OBJECT_NAME = "xdp_program.o"  # libbpf names internal maps after the object's file name
SCHEMA_VARIABLE = "xdpfleet_schema_version"  # an object's `const volatile __u32`: its maps' schema version
MAX_ENTRIES_LIMIT = 2 ** 32 - 1
# The map types whose max_entries is a number of entries (of a ring buffer it is bytes, of a perf event array
# CPUs, of storage maps 0), by kernel type number: those map_sizes can size.
SIZABLE_MAP_TYPES = {1: "hash", 2: "array", 3: "prog_array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
                     10: "lru_percpu_hash", 11: "lpm_trie", 12: "array_of_maps", 13: "hash_of_maps", 14: "devmap",
                     15: "sockmap", 16: "cpumap", 17: "xskmap", 18: "sockhash", 22: "queue", 23: "stack",
                     25: "devmap_hash", 30: "bloom_filter"}


class ProgramError(XdpfleetError):
    """A refused request; nothing was changed on the host. `details` go into the module result."""

    def __init__(self, message, **details):
        super(ProgramError, self).__init__(message)
        self.details = details


def select_program(bpf_object, name):
    """The program to attach: the named one, else the only XDP program in the object."""
    xdp_programs = [program for program in bpf_object.programs if program.is_xdp]
    if name:
        chosen = [program for program in xdp_programs if program.name == name]
        if not chosen:
            raise ProgramError("object %s has no XDP program named %s (XDP programs: %s)"
                               % (bpf_object.path, name, ", ".join(p.name for p in xdp_programs) or "none"))
        return chosen[0]
    if len(xdp_programs) != 1:
        problem = "no XDP program" if not xdp_programs else "several XDP programs (%s); set program" % (
            ", ".join(p.name for p in xdp_programs))
        raise ProgramError("object %s has %s" % (bpf_object.path, problem))
    return xdp_programs[0]


def requested_map_sizes(map_sizes):
    """The map_sizes option as {map name: int}; refuses any value that is not a positive integer."""
    sizes, wrong = {}, []
    for name, value in sorted((map_sizes or {}).items()):
        number = _positive_integer(value)
        if number is None:
            wrong.append("map_sizes.%s: %r is not a positive integer; give the map's number of entries (1-%d)"
                         % (name, value, MAX_ENTRIES_LIMIT))
        else:
            sizes[name] = number
    if wrong:
        raise ProgramError(listed(wrong))
    return sizes


def _positive_integer(value):
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ENTRIES_LIMIT:
        return None
    return value


def apply_map_sizes(bpf_object, map_sizes):
    """Sets the max_entries of the object's maps named in map_sizes, before it is loaded; refuses, before it sets
    any, a name the object has no map of and a map whose size is not a number of entries."""
    maps = dict((bpf_map.name, bpf_map) for bpf_map in bpf_object.maps if not _ownership.is_internal_map(bpf_map.name))
    problems = []
    for name in sorted(map_sizes):
        if name not in maps:
            problems.append("map_sizes.%s: the object has no map named %s; name one of its maps (%s)"
                            % (name, name, ", ".join(maps) or "none"))
        elif maps[name].map_type not in SIZABLE_MAP_TYPES:
            problems.append("map_sizes.%s: map %s has type %d, whose size is not a number of entries and cannot be "
                            "set here (map_sizes sizes maps of type %s); leave %s out of map_sizes"
                            % (name, name, maps[name].map_type, ", ".join(sorted(SIZABLE_MAP_TYPES.values())),
                               name))
    if problems:
        raise ProgramError(listed(problems))
    for name, size in map_sizes.items():
        maps[name].set_max_entries(size)


def declared_schema_version(bpf_object):
    """The schema version of an object's maps: its xdpfleet_schema_version, 0 (unversioned) without one."""
    return bpf_object.read_only_constant(SCHEMA_VARIABLE) or 0


def _layout_difference(declared, existing):
    return ", ".join("%s %s -> %s" % (key, existing[key], declared[key])
                     for key in _ownership.MAP_LAYOUT if declared[key] != existing[key])


def _why_not_reusable(bpf_map, fd, live, described, schema_version):
    """Why the live map behind fd cannot be carried over to bpf_map, or None when it can."""
    if bpf_map.name in live and described["map_schema_version"] != schema_version:
        return "map %s has schema version %d, the new object %d" % (
            bpf_map.name, described["map_schema_version"], schema_version)
    difference = _layout_difference(bpf_map.definition(), libbpf.map_info(fd))
    return "the layout of map %s changed (%s)" % (bpf_map.name, difference) if difference else None


def reusable_map_fds(bpf_object, described, pin_dir, migration, schema_version):
    """{map name: fd of the live map to carry over}; refuses a changed layout or map schema version unless
    migration is reset, which starts those maps empty.

    Live maps come from the attached xdpfleet program first (by id), then from pins in pin_dir. The
    attached program's maps carry the schema version it recorded; pinned maps alone carry none.
    """
    live = _live_ids(described)
    fds, refused = {}, []
    try:
        for bpf_map in bpf_object.maps:
            fd = live_map_fd(bpf_map.name, live, pin_dir)
            if fd is None:
                continue
            why = _why_not_reusable(bpf_map, fd, live, described, schema_version)
            if why:
                os.close(fd)
                refused.append(why)
            else:
                fds[bpf_map.name] = fd
    except Exception:
        close_all(fds)
        raise
    if refused and migration != "reset":
        close_all(fds)
        raise ProgramError("%s: the entries cannot be carried over. Set map_migration: reset to start these "
                           "maps empty" % listed(refused))
    return fds


def _live_ids(described):
    return dict((item["name"], item["id"]) for item in described["maps"]) \
        if described["owner"] == _ownership.OWNER_XDPFLEET else {}


def live_map_fd(name, live_ids, pin_dir):
    if _ownership.is_internal_map(name):
        return None
    if name in live_ids:
        return libbpf.map_fd_by_id(live_ids[name])
    path = _hostfs.pin_path(pin_dir, name)
    if _ownership.pinned_map_id(path) is None:
        return None
    return libbpf.obj_get(path)


def close_all(fds):
    for fd in fds.values():
        os.close(fd)


def prepare_load(bpf_object, program, reuse_fds, hw_ifindex=0):
    """Sets up what loading the object creates: program alone, the live maps in reuse_fds carried over. The
    caller loads it (or hands it to libxdp, which loads it)."""
    for other in bpf_object.programs:
        other.set_autoload(other.name == program.name)
    for bpf_map in bpf_object.maps:
        if bpf_map.name in reuse_fds:
            bpf_map.reuse_fd(reuse_fds[bpf_map.name])
        elif hw_ifindex:
            bpf_map.set_ifindex(hw_ifindex)
    if hw_ifindex:
        program.set_ifindex(hw_ifindex)


def load_object(bpf_object, program, reuse_fds, hw_ifindex):
    prepare_load(bpf_object, program, reuse_fds, hw_ifindex)
    try:
        bpf_object.load()
    except libbpf.LibbpfError as error:
        if hw_ifindex and error.errno in UNSUPPORTED:
            raise ProgramError("the device does not support XDP hardware offload (mode hw): %s" % error)
        tail = error.log.strip().splitlines()
        raise ProgramError("the kernel rejected program %s of %s (%s); end of the verifier log:\n%s"
                           % (program.name, bpf_object.path, error,
                              "\n".join(tail[-VERIFIER_LINES_IN_MESSAGE:])), verifier_log=tail)


def bind_meta(prog_fd, sha256, program_name, pin_dir, schema_version):
    key, value = _ownership.META_KEY, _ownership.encode_meta(sha256, program_name, pin_dir, schema_version)
    meta_fd = libbpf.map_create(BPF_MAP_TYPE_ARRAY, _ownership.META_MAP_NAME, len(key), len(value), 1)
    with _ownership.opened(meta_fd) as fd:
        libbpf.map_update(fd, key, value)
        libbpf.map_freeze(fd)
        libbpf.prog_bind_map(prog_fd, fd)


def pin(fd, pin_dir, name):
    path = _hostfs.pin_path(pin_dir, name)
    _hostfs.unpin(pin_dir, name)
    libbpf.obj_pin(fd, path)


def pin_by_id(items, pin_dir):
    for item in items:
        with _ownership.opened(libbpf.map_fd_by_id(item["id"])) as fd:
            pin(fd, pin_dir, item["name"])


def pin_object_maps(bpf_object, pin_dir):
    for bpf_map in bpf_object.maps:
        if _ownership.is_internal_map(bpf_map.name):
            continue
        if _ownership.pinned_map_id(_hostfs.pin_path(pin_dir, bpf_map.name)) != libbpf.map_info(bpf_map.fd)["id"]:
            pin(bpf_map.fd, pin_dir, bpf_map.name)


def unpin_stale(described, keep, pin_dir):
    """Unpins the old program's maps that the new one does not use (or that moved to another pin_dir)."""
    old_dir = described["pin_dir"]
    if described["owner"] != _ownership.OWNER_XDPFLEET or not old_dir:
        return
    for item in described["maps"]:
        if old_dir != pin_dir or item["name"] not in keep:
            if is_pinned(old_dir, item):
                _hostfs.unpin(old_dir, item["name"])
    if old_dir != pin_dir:
        _hostfs.remove_pin_dir_if_empty(old_dir)


def is_pinned(pin_dir, item):
    """Whether the map described by item ({name, id}) is pinned in pin_dir as itself."""
    return _ownership.pinned_map_id(_hostfs.pin_path(pin_dir, item["name"])) == item["id"]


def prepare_pin_dir(pin_dir):
    _hostfs.mount_bpffs()
    existed = os.path.isdir(pin_dir)
    _hostfs.make_pin_dir(pin_dir)
    return existed


def object_sha256(request):
    """The hash of the object to attach; without an object, the expected hash stands for it."""
    expected = (request.get("object_sha256") or "").lower()
    if not request.get("object"):
        return expected
    if uses_bcc(request):
        sha256 = _bcc_backend().source_sha256(request["object"], request["cflags"])
    else:
        try:
            sha256 = _hostfs.file_sha256(request["object"])
        except OSError as error:
            raise ProgramError("cannot read BPF object %s: %s" % (request["object"], error.strerror))
    if expected and expected != sha256:
        raise ProgramError("object %s has sha256 %s, but object_sha256 expects %s"
                           % (request["object"], sha256, expected))
    return sha256


def uses_bcc(request):
    return request.get("compiler") == "bcc"


def _bcc_backend():
    """The bcc backend; imported here, for compiler: bcc alone, as it is the largest module_util."""
    from ansible_collections.xdpfleet.xdp.plugins.module_utils import _bcc
    return _bcc


def open_object(request, described):
    """An ELF object opened with libbpf or, with compiler bcc, the C source compiled here by bcc."""
    if not uses_bcc(request):
        return libbpf.BpfObject(request["object"])
    live = _live_ids(described)
    return _bcc_backend().BccObject(request["object"], request["cflags"],
                                    lambda name: live_map_fd(name, live, request["pin_dir"]))


def bcc_source(request):
    """With compiler bcc the source, on the host, stands where the object would."""
    if request.get("object"):
        raise ProgramError("compiler: bcc compiles C source on the host; pass src (remote_src: true when it is "
                           "already on the host), not object")
    return request.get("src")


@contextlib.contextmanager
def inline_object(request):
    """The request with object_content (base64, sent by the action plugin) written to a file as `object`."""
    if not request.get("object_content"):
        yield request
        return
    try:
        content = base64.b64decode(request["object_content"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise ProgramError("object_content is not base64 (%s): pass the object's bytes base64-encoded, or use "
                           "object or src" % error)
    with tempfile.TemporaryDirectory(prefix="xdpfleet-") as directory:
        path = os.path.join(directory, INLINE_OBJECT_NAME)
        with open(path, "wb") as handle:
            handle.write(content)
        yield dict(request, object=path)
