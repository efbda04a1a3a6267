# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The subset of libbpf (libbpf.so.1, through ctypes) that xdpfleet needs.

Two layers: BpfObject/BpfProgram/BpfMap wrap libbpf's ELF object API (open, read-only
globals, load, pin), and plain functions wrap the bpf() syscall helpers that work on file
descriptors (info, map elements and batches, test runs) and the XDP hook of an interface.
The BTF functions are declared here too, for _btf. Every failure raises LibbpfError with a
message that says what was attempted; nothing here prints.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import os
import sys

from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError

LIBRARY_NAME = "libbpf.so.1"
MISSING_LIBRARY_HINT = (
    "libbpf.so.1 was not found on this host: install the 'libbpf1' package "
    "(Debian/Ubuntu) or 'libbpf' (RHEL family)"
)
OBJ_NAME_LEN = 16
TAG_SIZE = 8
LOG_BUFFER_SIZE = 1 << 22
LOG_TAIL_LINES = 30
KERNEL_MESSAGE = "libbpf: Kernel error message: "  # how libbpf passes on a netlink extended ack

LIBBPF_INFO = 1
BPF_PROG_TYPE_XDP = 6
BPF_PROG_TYPE_EXT = 28
BTF_KIND_DATASEC = 15
READ_ONLY_SECTION = ".rodata"  # where clang places `const volatile` globals, and libbpf's map of them
BPF_NOEXIST = 1
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_STATS_RUN_TIME = 0

BATCH_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, 524)  # 524: ENOTSUPP


class LibbpfError(XdpfleetError):
    """A libbpf or bpf() failure; `errno` is the kernel's error, `log` the verifier's."""

    def __init__(self, message, err=None, log=""):
        if err:
            message = "%s: %s" % (message, os.strerror(err))
        super(LibbpfError, self).__init__(message)
        self.errno = err
        self.log = log


c_u8, c_u32, c_u64, c_int, c_size_t = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int, ctypes.c_size_t
c_ptr, c_str = ctypes.c_void_p, ctypes.c_char_p


class _OpenOpts(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_str),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", c_str),
        ("_removed_attach_prog_fd", c_u32),
        ("kconfig", c_str),
        ("btf_custom_path", c_str),
        ("kernel_log_buf", c_ptr),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_u32),
    ]


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_ptr),
        ("data_out", c_ptr),
        ("data_size_in", c_u32),
        ("data_size_out", c_u32),
        ("ctx_in", c_ptr),
        ("ctx_out", c_ptr),
        ("ctx_size_in", c_u32),
        ("ctx_size_out", c_u32),
        ("retval", c_u32),
        ("repeat", c_int),
        ("duration", c_u32),
        ("flags", c_u32),
        ("cpu", c_u32),
        ("batch_size", c_u32),
    ]


class _XdpQueryOpts(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("prog_id", c_u32),
        ("drv_prog_id", c_u32),
        ("hw_prog_id", c_u32),
        ("skb_prog_id", c_u32),
        ("attach_mode", c_u8),
    ]


class _MapCreateOpts(ctypes.Structure):
    """struct bpf_map_create_opts as of libbpf 1.0 (later versions accept this smaller sz)."""
    _fields_ = [("sz", c_size_t), ("btf_fd", c_u32), ("btf_key_type_id", c_u32), ("btf_value_type_id", c_u32),
                ("btf_vmlinux_value_type_id", c_u32), ("inner_map_fd", c_u32), ("map_flags", c_u32),
                ("map_extra", c_u64), ("numa_node", c_u32), ("map_ifindex", c_u32)]


class _XdpAttachOpts(ctypes.Structure):
    _fields_ = [("sz", c_size_t), ("old_prog_fd", c_int)]


class _BatchOpts(ctypes.Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_u64), ("flags", c_u64)]


class _ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", c_u32),
        ("id", c_u32),
        ("tag", c_u8 * TAG_SIZE),
        ("jited_prog_len", c_u32),
        ("xlated_prog_len", c_u32),
        ("jited_prog_insns", c_u64),
        ("xlated_prog_insns", c_u64),
        ("load_time", c_u64),
        ("created_by_uid", c_u32),
        ("nr_map_ids", c_u32),
        ("map_ids", c_u64),
        ("name", ctypes.c_char * OBJ_NAME_LEN),
        ("ifindex", c_u32),
        ("gpl_compatible", c_u32),
        ("netns_dev", c_u64),
        ("netns_ino", c_u64),
        ("nr_jited_ksyms", c_u32),
        ("nr_jited_func_lens", c_u32),
        ("jited_ksyms", c_u64),
        ("jited_func_lens", c_u64),
        ("btf_id", c_u32),
        ("func_info_rec_size", c_u32),
        ("func_info", c_u64),
        ("nr_func_info", c_u32),
        ("nr_line_info", c_u32),
        ("line_info", c_u64),
        ("jited_line_info", c_u64),
        ("nr_jited_line_info", c_u32),
        ("line_info_rec_size", c_u32),
        ("jited_line_info_rec_size", c_u32),
        ("nr_prog_tags", c_u32),
        ("prog_tags", c_u64),
        ("run_time_ns", c_u64),
        ("run_cnt", c_u64),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", c_u32),
        ("id", c_u32),
        ("key_size", c_u32),
        ("value_size", c_u32),
        ("max_entries", c_u32),
        ("map_flags", c_u32),
        ("name", ctypes.c_char * OBJ_NAME_LEN),
        ("ifindex", c_u32),
        ("btf_vmlinux_value_type_id", c_u32),
        ("netns_dev", c_u64),
        ("netns_ino", c_u64),
        ("btf_id", c_u32),
        ("btf_key_type_id", c_u32),
        ("btf_value_type_id", c_u32),
        ("_pad", c_u32),
        ("map_extra", c_u64),
    ]


class _LinkInfo(ctypes.Structure):
    """The head of struct bpf_link_info; the kernel fills no more than the size asked for."""
    _fields_ = [("type", c_u32), ("id", c_u32), ("prog_id", c_u32)]


class BtfType(ctypes.Structure):
    """struct btf_type: name, then kind and vlen packed in info, then size or type; kind-specific data follows."""
    _fields_ = [("name_off", c_u32), ("info", c_u32), ("size_or_type", c_u32)]

    @property
    def kind(self):
        return (self.info >> 24) & 0x1f

    @property
    def vlen(self):
        return self.info & 0xffff

    @property
    def kind_flag(self):
        return bool(self.info >> 31)

    def following(self, element_type, count=None):
        """The elements of element_type that follow this type in the BTF data (count, or vlen of them)."""
        count = self.vlen if count is None else count
        return (element_type * count).from_address(ctypes.addressof(self) + ctypes.sizeof(BtfType))


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", c_u32), ("offset", c_u32), ("size", c_u32)]


_PRINT_CALLBACK = ctypes.CFUNCTYPE(c_int, c_int, c_str, c_ptr)
_RING_SAMPLE_CALLBACK = ctypes.CFUNCTYPE(c_int, c_ptr, c_ptr, c_size_t)

_SIGNATURES = {
    "libbpf_set_print": (c_ptr, [_PRINT_CALLBACK]),
    "libbpf_num_possible_cpus": (c_int, []),
    "bpf_object__open_file": (c_ptr, [c_str, ctypes.POINTER(_OpenOpts)]),
    "bpf_object__load": (c_int, [c_ptr]),
    "bpf_object__close": (None, [c_ptr]),
    "bpf_object__next_program": (c_ptr, [c_ptr, c_ptr]),
    "bpf_object__next_map": (c_ptr, [c_ptr, c_ptr]),
    "bpf_object__btf": (c_ptr, [c_ptr]),
    "bpf_program__name": (c_str, [c_ptr]),
    "bpf_program__section_name": (c_str, [c_ptr]),
    "bpf_program__fd": (c_int, [c_ptr]),
    "bpf_program__type": (c_int, [c_ptr]),
    "bpf_program__set_autoload": (c_int, [c_ptr, ctypes.c_bool]),
    "bpf_program__set_ifindex": (None, [c_ptr, c_u32]),
    "bpf_program__set_type": (c_int, [c_ptr, c_int]),
    "bpf_program__set_expected_attach_type": (c_int, [c_ptr, c_int]),
    "bpf_program__set_attach_target": (c_int, [c_ptr, c_int, c_str]),
    "bpf_raw_tracepoint_open": (c_int, [c_str, c_int]),
    "bpf_program__attach": (c_ptr, [c_ptr]),
    "bpf_link__pin": (c_int, [c_ptr, c_str]),
    "bpf_link__destroy": (c_int, [c_ptr]),
    "bpf_map__name": (c_str, [c_ptr]),
    "bpf_map__fd": (c_int, [c_ptr]),
    "bpf_map__type": (c_int, [c_ptr]),
    "bpf_map__key_size": (c_u32, [c_ptr]),
    "bpf_map__value_size": (c_u32, [c_ptr]),
    "bpf_map__max_entries": (c_u32, [c_ptr]),
    "bpf_map__map_flags": (c_u32, [c_ptr]),
    "bpf_map__set_ifindex": (None, [c_ptr, c_u32]),
    "bpf_map__set_max_entries": (c_int, [c_ptr, c_u32]),
    "bpf_map__reuse_fd": (c_int, [c_ptr, c_int]),
    "bpf_map__pin": (c_int, [c_ptr, c_str]),
    "bpf_map__is_internal": (ctypes.c_bool, [c_ptr]),
    "bpf_map__initial_value": (c_ptr, [c_ptr, ctypes.POINTER(c_size_t)]),
    "btf__load_from_kernel_by_id": (c_ptr, [c_u32]),
    "btf__load_vmlinux_btf": (c_ptr, []),
    "btf__free": (None, [c_ptr]),
    "btf__type_by_id": (ctypes.POINTER(BtfType), [c_ptr, c_u32]),
    "btf__name_by_offset": (c_str, [c_ptr, c_u32]),
    "btf__resolve_size": (ctypes.c_int64, [c_ptr, c_u32]),
    "btf__resolve_type": (c_int, [c_ptr, c_u32]),
    "btf__find_by_name_kind": (c_int, [c_ptr, c_str, c_u32]),
    "bpf_obj_get": (c_int, [c_str]),
    "bpf_obj_pin": (c_int, [c_int, c_str]),
    "bpf_prog_get_fd_by_id": (c_int, [c_u32]),
    "bpf_map_get_fd_by_id": (c_int, [c_u32]),
    "bpf_xdp_query": (c_int, [c_int, c_int, ctypes.POINTER(_XdpQueryOpts)]),
    "bpf_xdp_attach": (c_int, [c_int, c_int, c_u32, ctypes.POINTER(_XdpAttachOpts)]),
    "bpf_map_get_next_id": (c_int, [c_u32, ctypes.POINTER(c_u32)]),
    "bpf_prog_get_next_id": (c_int, [c_u32, ctypes.POINTER(c_u32)]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_ptr, ctypes.POINTER(c_u32)]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_ptr, c_ptr]),
    "bpf_map_update_elem": (c_int, [c_int, c_ptr, c_ptr, c_u64]),
    "bpf_map_delete_elem": (c_int, [c_int, c_ptr]),
    "bpf_map_get_next_key": (c_int, [c_int, c_ptr, c_ptr]),
    "bpf_map_update_batch": (c_int, [c_int, c_ptr, c_ptr, ctypes.POINTER(c_u32), ctypes.POINTER(_BatchOpts)]),
    "bpf_map_delete_batch": (c_int, [c_int, c_ptr, ctypes.POINTER(c_u32), ctypes.POINTER(_BatchOpts)]),
    "bpf_map_lookup_batch": (
        c_int, [c_int, c_ptr, c_ptr, c_ptr, c_ptr, ctypes.POINTER(c_u32), ctypes.POINTER(_BatchOpts)]),
    "bpf_prog_test_run_opts": (c_int, [c_int, ctypes.POINTER(_TestRunOpts)]),
    "bpf_enable_stats": (c_int, [c_int]),
    "bpf_map_create": (c_int, [c_int, c_str, c_u32, c_u32, c_u32, c_ptr]),
    "bpf_prog_bind_map": (c_int, [c_int, c_int, c_ptr]),
    "bpf_map_freeze": (c_int, [c_int]),
    "ring_buffer__new": (c_ptr, [c_int, _RING_SAMPLE_CALLBACK, c_ptr, c_ptr]),
    "ring_buffer__poll": (c_int, [c_ptr, c_int]),
    "ring_buffer__consume": (c_int, [c_ptr]),
    "ring_buffer__free": (None, [c_ptr]),
}

_library = None
_messages = []


def printed(fmt, args):
    """The text a C library's print callback gets as a format and a va_list."""
    text = ctypes.create_string_buffer(1024)
    ctypes.CDLL(None).vsnprintf(text, len(text), fmt, ctypes.c_void_p(args))
    return text.value.decode("utf-8", "replace")


def declare(loaded, signatures):
    """Sets the result and argument types of a loaded C library's functions: {name: (restype, argtypes)}."""
    for name, (restype, argtypes) in signatures.items():
        function = getattr(loaded, name)
        function.restype, function.argtypes = restype, argtypes


@_PRINT_CALLBACK
def _collect_message(level, fmt, args):
    """Keeps libbpf's warnings and notices for error reports instead of printing them."""
    if level > LIBBPF_INFO:
        return 0
    _messages.append(printed(fmt, args).rstrip())
    del _messages[:-LOG_TAIL_LINES]
    return 0


def library():
    """The loaded libbpf.so.1 with declared signatures; raises LibbpfError when absent."""
    global _library
    if _library is None:
        try:
            loaded = ctypes.CDLL(LIBRARY_NAME, use_errno=True)
        except OSError:
            raise LibbpfError(MISSING_LIBRARY_HINT)
        declare(loaded, _SIGNATURES)
        loaded.libbpf_set_print(_collect_message)
        _library = loaded
    return _library


def recent_messages():
    """The last lines libbpf reported, newest last."""
    return list(_messages)


def _check(result, what):
    """libbpf 1.x returns -errno (and sets errno) on failure."""
    if result < 0:
        raise LibbpfError(what, -result)
    return result


def _buffer(data):
    return ctypes.create_string_buffer(bytes(data), len(data)) if data else None


def num_possible_cpus():
    return _check(library().libbpf_num_possible_cpus(), "cannot count possible CPUs")


def percpu_value_size(value_size):
    """Per-CPU map values are padded to 8 bytes per CPU in user space buffers."""
    return (value_size + 7) // 8 * 8


# --- file descriptors, ids and info -------------------------------------------------

def obj_get(path):
    return _check(library().bpf_obj_get(path.encode()), "cannot open pinned object %s" % path)


def obj_pin(fd, path):
    _check(library().bpf_obj_pin(fd, path.encode()), "cannot pin at %s" % path)


def prog_fd_by_id(prog_id):
    return _check(library().bpf_prog_get_fd_by_id(prog_id), "cannot open program id %d" % prog_id)


def map_fd_by_id(map_id):
    return _check(library().bpf_map_get_fd_by_id(map_id), "cannot open map id %d" % map_id)


def map_create(map_type, name, key_size, value_size, max_entries, inner_map_fd=None):
    """A new map outside any ELF object; returns its fd. inner_map_fd: the template of a map-in-map's maps."""
    opts = None
    if inner_map_fd is not None:
        opts = ctypes.byref(_MapCreateOpts(sz=ctypes.sizeof(_MapCreateOpts), inner_map_fd=inner_map_fd))
    return _check(library().bpf_map_create(map_type, name.encode(), key_size, value_size, max_entries, opts),
                  "cannot create map %s" % name)


def prog_bind_map(prog_fd, map_fd):
    """Binds a map to a program (BPF_PROG_BIND_MAP) so it lives as long and shows in its map_ids."""
    _check(library().bpf_prog_bind_map(prog_fd, map_fd, None), "cannot bind map to program")


def map_freeze(fd):
    """Makes a map read-only for user space (BPF_MAP_FREEZE)."""
    _check(library().bpf_map_freeze(fd), "cannot freeze map")


def xdp_query(ifindex):
    """The interface's IFLA_XDP as libbpf reads it: attach_mode (XDP_ATTACHED_*) and program ids."""
    opts = _XdpQueryOpts(sz=ctypes.sizeof(_XdpQueryOpts))
    _check(library().bpf_xdp_query(ifindex, 0, ctypes.byref(opts)), "cannot query XDP on ifindex %d" % ifindex)
    return {name: getattr(opts, name) for name, _type in _XdpQueryOpts._fields_[1:]}


def xdp_attach(ifindex, prog_fd, flags, old_prog_fd=0):
    """Sets the XDP hook of ifindex to prog_fd (-1: no program) through rtnetlink (bpf_xdp_attach).

    With XDP_FLAGS_REPLACE and old_prog_fd, the kernel swaps only when old_prog_fd's program is the one attached.
    """
    opts = _XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts), old_prog_fd=old_prog_fd)
    del _messages[:]
    _check(library().bpf_xdp_attach(ifindex, prog_fd, flags, ctypes.byref(opts)),
           "cannot set the XDP program of ifindex %d" % ifindex)


def raw_tracepoint_open(prog_fd):
    """Attaches a loaded tracing or extension program to the target it was loaded for; returns the link fd."""
    return _check(library().bpf_raw_tracepoint_open(None, prog_fd), "cannot attach the program to its target")


def kernel_message():
    """The kernel's own reason (netlink extended ack) for refusing libbpf's last netlink request, or None."""
    for line in reversed(_messages):
        if line.startswith(KERNEL_MESSAGE):
            return line[len(KERNEL_MESSAGE):]
    return None


def _ids(next_id_function):
    current, following = 0, c_u32()
    while next_id_function(current, ctypes.byref(following)) == 0:
        current = following.value
        yield current


def map_ids():
    return list(_ids(library().bpf_map_get_next_id))


def prog_ids():
    return list(_ids(library().bpf_prog_get_next_id))


def _info(fd, info):
    length = c_u32(ctypes.sizeof(info))
    _check(library().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(length)),
           "cannot read object info of fd %d" % fd)
    return info


def prog_info(fd):
    """id, name, tag (hex), type, map_ids and load details of a loaded program."""
    info = _info(fd, _ProgInfo())
    ids = (c_u32 * info.nr_map_ids)()
    if info.nr_map_ids:
        request = _ProgInfo(nr_map_ids=info.nr_map_ids, map_ids=ctypes.addressof(ids))
        info = _info(fd, request)
    return {
        "id": info.id,
        "name": info.name.decode(),
        "tag": bytes(info.tag).hex(),
        "type": info.type,
        "map_ids": list(ids),
        "load_time": info.load_time,
        "btf_id": info.btf_id,
        "xlated_prog_len": info.xlated_prog_len,
        "jited_prog_len": info.jited_prog_len,
        "jited": info.jited_prog_len > 0,
        "run_cnt": info.run_cnt,
        "run_time_ns": info.run_time_ns,
    }


def link_info(fd):
    """id, type (BPF_LINK_TYPE_*) and prog_id of a BPF link."""
    info = _info(fd, _LinkInfo())
    return {"id": info.id, "type": info.type, "prog_id": info.prog_id}


def map_info(fd):
    """id, name, type, key/value sizes, max_entries, flags and BTF ids of a map."""
    info = _info(fd, _MapInfo())
    return {
        "id": info.id,
        "name": info.name.decode(),
        "type": info.type,
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "map_flags": info.map_flags,
        "btf_id": info.btf_id,
        "btf_key_type_id": info.btf_key_type_id,
        "btf_value_type_id": info.btf_value_type_id,
    }


# --- map elements ---------------------------------------------------------------------

def map_lookup(fd, key, value_size):
    """The value bytes stored at key, or None when the key is absent."""
    value = ctypes.create_string_buffer(value_size)
    result = library().bpf_map_lookup_elem(fd, _buffer(key), value)
    if result == -errno.ENOENT:
        return None
    _check(result, "cannot look up map element")
    return value.raw


def map_update(fd, key, value, flags=0):
    _check(library().bpf_map_update_elem(fd, _buffer(key), _buffer(value), flags), "cannot update map element")


def map_delete(fd, key):
    """Deletes key; returns False when it was not there."""
    result = library().bpf_map_delete_elem(fd, _buffer(key))
    if result == -errno.ENOENT:
        return False
    _check(result, "cannot delete map element")
    return True


def map_keys(fd, key_size):
    """Every key of a map, through BPF_MAP_GET_NEXT_KEY."""
    keys, previous = [], None
    following = ctypes.create_string_buffer(key_size)
    while library().bpf_map_get_next_key(fd, previous, following) == 0:
        keys.append(following.raw)
        previous = _buffer(following.raw)
    return keys


def _batch_opts(elem_flags=0):
    return _BatchOpts(sz=ctypes.sizeof(_BatchOpts), elem_flags=elem_flags)


def map_update_batch(fd, keys, values, flags=0):
    """Writes many elements in one syscall, element by element where the map type has no batch support."""
    if not keys:
        return
    count = c_u32(len(keys))
    result = library().bpf_map_update_batch(
        fd, _buffer(b"".join(keys)), _buffer(b"".join(values)), ctypes.byref(count),
        ctypes.byref(_batch_opts(flags)))
    if -result in BATCH_UNSUPPORTED and count.value == 0:
        for key, value in zip(keys, values):
            map_update(fd, key, value, flags)
        return
    _check(result, "cannot update a batch of %d map elements (%d written)" % (len(keys), count.value))


def map_delete_batch(fd, keys):
    """Deletes many elements; every key must exist."""
    if not keys:
        return
    count = c_u32(len(keys))
    result = library().bpf_map_delete_batch(
        fd, _buffer(b"".join(keys)), ctypes.byref(count), ctypes.byref(_batch_opts()))
    if -result in BATCH_UNSUPPORTED and count.value == 0:
        for key in keys:
            map_delete(fd, key)
        return
    _check(result, "cannot delete a batch of %d map elements (%d deleted)" % (len(keys), count.value))


def map_items(fd, key_size, value_size, max_entries):
    """Every (key, value) pair, through BPF_MAP_LOOKUP_BATCH where the map supports it.

    value_size is the user-space size (for per-CPU maps: padded size x possible CPUs).
    """
    try:
        return _lookup_batch(fd, key_size, value_size, max(1, max_entries))
    except LibbpfError as error:
        if error.errno not in BATCH_UNSUPPORTED:
            raise
    items = ((key, map_lookup(fd, key, value_size)) for key in map_keys(fd, key_size))
    return [(key, value) for key, value in items if value is not None]  # an empty program array slot has a key


def array_values(fd, value_size, count):
    """The values at indexes 0..count-1 of an array map, concatenated, in one BPF_MAP_LOOKUP_BATCH.

    value_size is the user-space size (for per-CPU arrays: padded size x possible CPUs).
    """
    if count == 0:
        return b""
    keys, values = ctypes.create_string_buffer(4 * count), ctypes.create_string_buffer(value_size * count)
    read = c_u32(count)
    result = library().bpf_map_lookup_batch(fd, None, ctypes.create_string_buffer(8), keys, values,
                                            ctypes.byref(read), ctypes.byref(_batch_opts()))
    if result < 0 and result != -errno.ENOENT:
        _check(result, "cannot read %d array elements" % count)
    if read.value != count:
        raise LibbpfError("the array has %d of the %d elements asked for" % (read.value, count))
    return values.raw


def _split(buffer, size, count):
    """The first count elements of size bytes in a ctypes buffer (read once: .raw copies the buffer)."""
    raw = buffer.raw
    return [raw[offset:offset + size] for offset in range(0, count * size, size)]


def _lookup_batch(fd, key_size, value_size, chunk):
    items = []
    in_batch, out_batch = None, ctypes.create_string_buffer(max(key_size, 8))
    keys = ctypes.create_string_buffer(key_size * chunk)
    values = ctypes.create_string_buffer(value_size * chunk)
    while True:
        count = c_u32(chunk)
        result = library().bpf_map_lookup_batch(
            fd, in_batch, out_batch, keys, values, ctypes.byref(count), ctypes.byref(_batch_opts()))
        if result < 0 and result != -errno.ENOENT:
            _check(result, "cannot read map elements in batches")
        items.extend(zip(_split(keys, key_size, count.value), _split(values, value_size, count.value)))
        if result == -errno.ENOENT:
            return items
        in_batch = _buffer(out_batch.raw)


# --- test runs --------------------------------------------------------------------------

def prog_test_run(prog_fd, data, repeat=1, data_out_size=None):
    """Runs a program on one packet through BPF_PROG_TEST_RUN.

    Returns (retval, duration_ns per run, packet bytes after the run).
    """
    data_in = _buffer(data)
    out_size = data_out_size or len(data) + 256
    data_out = ctypes.create_string_buffer(out_size)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.cast(data_in, c_ptr),
                        data_out=ctypes.cast(data_out, c_ptr), data_size_in=len(data),
                        data_size_out=out_size, repeat=repeat)
    _check(library().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN failed")
    return opts.retval, opts.duration, data_out.raw[:opts.data_size_out]


class _XdpMd(ctypes.Structure):
    _fields_ = [(name, c_u32) for name in
                ("data", "data_end", "data_meta", "ingress_ifindex", "rx_queue_index", "egress_ifindex")]


def prog_run_live_frames(prog_fd, frame, ifindex, repeat, batch):
    """Runs an XDP program on `repeat` copies of frame as live frames arriving on ifindex (in the calling
    thread's network namespace): what the program returns happens to them (XDP_TX sends them out of ifindex).
    Kernel >= 5.18; older kernels refuse with EINVAL."""
    data = ctypes.create_string_buffer(bytes(frame), len(frame))
    context = _XdpMd(data_end=len(frame), ingress_ifindex=ifindex)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.cast(data, c_ptr), data_size_in=len(frame),
                        ctx_in=ctypes.addressof(context), ctx_size_in=ctypes.sizeof(context), repeat=repeat,
                        flags=BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=batch)
    _check(library().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_RUN with live frames failed")


def enable_stats():
    """A descriptor that keeps the kernel's per-program run statistics (prog_info's run_cnt and run_time_ns) on
    until it is closed, or this process ends."""
    return _check(library().bpf_enable_stats(BPF_STATS_RUN_TIME), "cannot enable BPF statistics")


# --- ring buffers -----------------------------------------------------------------------

class _OwnedPointer:
    """A libbpf object this process owns: freed once, by close() or at the end of a with block."""

    _free = None
    _pointer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self._pointer:
            getattr(library(), self._free)(self._pointer)
            self._pointer = None


class RingBuffer(_OwnedPointer):
    """Reads, and so consumes, records of a BPF_MAP_TYPE_RINGBUF map; use as a context manager.
    With a `limit` it takes that many records in all: later records stay in the ring for the next reader."""

    _free = "ring_buffer__free"
    _STOP = -errno.ECANCELED  # the callback's answer at the limit: libbpf stops after that record

    def __init__(self, map_fd, limit=0):
        self._records = []
        self._left = limit or None
        self._callback = _RING_SAMPLE_CALLBACK(self._collect)
        self._pointer = library().ring_buffer__new(map_fd, self._callback, None, None)
        if not self._pointer:
            raise LibbpfError("cannot open ring buffer map fd %d" % map_fd, ctypes.get_errno())

    def _collect(self, _context, data, size):
        self._records.append(ctypes.string_at(data, size))
        if self._left is None:
            return 0
        self._left -= 1
        return self._STOP if self._left == 0 else 0

    def _take(self, result, what):
        if result != self._STOP:
            _check(result, what)
        records, self._records = self._records, []
        return records

    def consume(self):
        """Every record available now (up to the limit), without waiting."""
        if self._left == 0:
            return []
        return self._take(library().ring_buffer__consume(self._pointer), "cannot consume ring buffer")

    def poll(self, timeout_ms):
        """Records available within timeout_ms (up to the limit)."""
        if self._left == 0:
            return []
        return self._take(library().ring_buffer__poll(self._pointer, timeout_ms), "cannot poll ring buffer")


# --- ELF objects --------------------------------------------------------------------------

class BpfProgram:
    def __init__(self, pointer):
        self._pointer = pointer

    @property
    def name(self):
        return library().bpf_program__name(self._pointer).decode()

    @property
    def section(self):
        return library().bpf_program__section_name(self._pointer).decode()

    @property
    def prog_type(self):
        return library().bpf_program__type(self._pointer)

    @property
    def is_xdp(self):
        return self.prog_type == BPF_PROG_TYPE_XDP

    @property
    def fd(self):
        return _check(library().bpf_program__fd(self._pointer), "program %s is not loaded" % self.name)

    def set_autoload(self, autoload):
        _check(library().bpf_program__set_autoload(self._pointer, autoload), "cannot set autoload")

    def set_ifindex(self, ifindex):
        """Binds the program to a device for hardware offload."""
        library().bpf_program__set_ifindex(self._pointer, ifindex)

    def set_extension_of(self, target_fd, function):
        """Loads the program as an extension (BPF_PROG_TYPE_EXT, freplace) of function in the loaded program
        behind target_fd, as libxdp loads the programs of its dispatcher."""
        lib = library()
        _check(lib.bpf_program__set_type(self._pointer, BPF_PROG_TYPE_EXT), "cannot set the program type")
        _check(lib.bpf_program__set_expected_attach_type(self._pointer, 0), "cannot set the attach type")
        _check(lib.bpf_program__set_attach_target(self._pointer, target_fd, function.encode()),
               "cannot target %s" % function)

    def attach(self):
        """Attaches the loaded program where its section says (libbpf's auto-attach); returns the BpfLink."""
        del _messages[:]
        pointer = library().bpf_program__attach(self._pointer)
        if not pointer:
            raise LibbpfError("cannot attach program %s (section %s)" % (self.name, self.section), ctypes.get_errno())
        return BpfLink(pointer)


class BpfLink(_OwnedPointer):
    """A BPF link libbpf made; closing it releases this process's hold only: a pinned link stays attached."""

    _free = "bpf_link__destroy"

    def __init__(self, pointer):
        self._pointer = pointer

    def pin(self, path):
        _check(library().bpf_link__pin(self._pointer, path.encode()), "cannot pin link at %s" % path)


class BpfMap:
    def __init__(self, pointer):
        self._pointer = pointer

    def _get(self, attribute, *args):
        return getattr(library(), "bpf_map__" + attribute)(self._pointer, *args)

    @property
    def name(self):
        return self._get("name").decode()

    @property
    def fd(self):
        return _check(self._get("fd"), "map %s is not created" % self.name)

    @property
    def is_internal(self):
        """True for .data/.bss/.rodata maps libbpf makes for global variables."""
        return bool(self._get("is_internal"))

    @property
    def map_type(self):
        return self._get("type")

    def definition(self):
        """The layout declared in the ELF object (or set before load), comparable with map_info()."""
        return {attribute: self._get(attribute)
                for attribute in ("type", "key_size", "value_size", "max_entries", "map_flags")}

    def set_max_entries(self, max_entries):
        """Sizes the map before the object is loaded, in place of the size the object declares."""
        _check(self._get("set_max_entries", max_entries), "cannot set max_entries of map %s" % self.name)

    def set_ifindex(self, ifindex):
        """Creates the map on a device for hardware offload."""
        library().bpf_map__set_ifindex(self._pointer, ifindex)

    def initial_value(self):
        """The bytes the map is created with (for .data/.rodata: the globals' initial values)."""
        size = c_size_t()
        data = self._get("initial_value", ctypes.byref(size))
        if not data:
            raise LibbpfError("map %s has no initial value" % self.name)
        return ctypes.string_at(data, size.value)

    def reuse_fd(self, fd):
        """Makes the object use an existing kernel map instead of creating one."""
        _check(library().bpf_map__reuse_fd(self._pointer, fd), "cannot reuse a map for %s" % self.name)

    def pin(self, path):
        _check(library().bpf_map__pin(self._pointer, path.encode()), "cannot pin map %s at %s" % (self.name, path))


class BpfObject(_OwnedPointer):
    """An ELF object opened with libbpf; use as a context manager so it is always closed.

    Closing releases the object's own descriptors; kernel objects stay alive while
    they are pinned or attached.
    """

    _free = "bpf_object__close"

    def __init__(self, path):
        self.path = path
        self._log = ctypes.create_string_buffer(LOG_BUFFER_SIZE)
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), kernel_log_buf=ctypes.cast(self._log, c_ptr),
                         kernel_log_size=LOG_BUFFER_SIZE)
        del _messages[:]
        self._pointer = library().bpf_object__open_file(path.encode(), ctypes.byref(opts))
        if not self._pointer:
            raise LibbpfError("cannot open BPF object %s (%s)" % (path, "; ".join(recent_messages()[-3:])),
                              ctypes.get_errno())

    @property
    def pointer(self):
        """The struct bpf_object *, for libxdp."""
        return self._pointer

    def _walk(self, next_function, wrapper):
        items, current = [], None
        while True:
            current = next_function(self._pointer, current)
            if not current:
                return items
            items.append(wrapper(current))

    @property
    def programs(self):
        return self._walk(library().bpf_object__next_program, BpfProgram)

    @property
    def maps(self):
        return self._walk(library().bpf_object__next_map, BpfMap)

    def program(self, name):
        return self._find(self.programs, name, "program")

    def read_only_constant(self, name):
        """The initial value of the unsigned integer `const volatile` global `name`, read where the object's
        BTF places it in .rodata (before load too); None when the object has no such global."""
        placed = self._read_only_variable(name)
        if placed is None:
            return None
        offset, size = placed
        rodata = next(bpf_map for bpf_map in self.maps if bpf_map.name.endswith(READ_ONLY_SECTION))
        return int.from_bytes(rodata.initial_value()[offset:offset + size], sys.byteorder)

    def _read_only_variable(self, name):
        """(offset, size) of the global `name` in the .rodata section, from the object's BTF, or None."""
        lib = library()
        btf = lib.bpf_object__btf(self._pointer)
        section_id = lib.btf__find_by_name_kind(btf, READ_ONLY_SECTION.encode(), BTF_KIND_DATASEC) if btf else -1
        if section_id < 0:
            return None
        for variable in lib.btf__type_by_id(btf, section_id).contents.following(_BtfVarSecinfo):
            if lib.btf__name_by_offset(btf, lib.btf__type_by_id(btf, variable.type).contents.name_off) == name.encode():
                return variable.offset, variable.size
        return None

    def map(self, name):
        return self._find(self.maps, name, "map")

    def _find(self, items, name, kind):
        for item in items:
            if item.name == name:
                return item
        raise LibbpfError("%s has no %s named %r (it has: %s)"
                          % (self.path, kind, name, ", ".join(item.name for item in items) or "none"))

    def load(self):
        """Creates the maps and loads the programs; a rejection carries the verifier log's tail."""
        result = library().bpf_object__load(self._pointer)
        if result < 0:
            log = self._log.value.decode("utf-8", "replace")
            tail = "\n".join(log.strip().splitlines()[-LOG_TAIL_LINES:] or recent_messages())
            raise LibbpfError("loading %s failed" % self.path, -result, log=tail)
