# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What bpf_events reports: the records of a pinned BPF ring buffer, decoded as a struct of the programs that
write them.

A ring buffer map carries no BTF type of its records (libbpf creates it without one), so the struct is looked
up by name in the BTF of a program that uses the map, found among the kernel's programs by the map's id; the
struct becomes a dict as xdp_map decodes map values (_maps.codec_from_tree). Reading is _drops.read_records's:
consumed by a read, peeked at in check mode.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _btf, _drops, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._maps import codec_from_tree

BPF_MAP_TYPE_RINGBUF = 27


class EventsError(XdpfleetError):
    pass


def _btf_ids_of_users(map_id):
    """The BTF ids of the programs that use the map."""
    for prog_id in libbpf.prog_ids():
        try:
            fd = libbpf.prog_fd_by_id(prog_id)
        except libbpf.LibbpfError:
            continue  # unloaded meanwhile
        with _ownership.opened(fd):
            info = libbpf.prog_info(fd)
        if map_id in info["map_ids"] and info["btf_id"]:
            yield info["btf_id"]


def record_codec(map_id, record_type, path):
    """The codec of struct record_type from the BTF of a program that uses the map."""
    for btf_id in _btf_ids_of_users(map_id):
        with _btf.KernelBtf(btf_id) as btf:
            tree = btf.struct_tree(record_type)
        if tree:
            return codec_from_tree(tree)
    raise EventsError("record_type: no program using the ring buffer %s has a struct %s in its BTF; name the struct "
                      "its programs write, built with -g, and referenced from a global so that clang puts it in the "
                      "BTF (const struct %s *unused __attribute__((unused));)" % (path, record_type, record_type))


def decode(record, codec):
    """The record as a dict, or its bytes in hex when it is shorter than the struct or there is no struct."""
    if codec is None or len(record) < codec.size:
        return {"data": record.hex()}
    return codec.decode(record[:codec.size])


def read_events(path, record_type=None, timeout=1.0, count=0, consume=True):
    """{events, map}: the records of the ring buffer pinned at path, decoded, taken out of it unless consume=False."""
    try:
        fd = libbpf.obj_get(path)
    except libbpf.LibbpfError as error:
        raise EventsError("map: cannot open the ring buffer pinned at %s (%s); attach its programs first "
                          "(bpf_program) or give the path of the pinned map" % (path, error))
    with _ownership.opened(fd):
        info = libbpf.map_info(fd)
        if info["type"] != BPF_MAP_TYPE_RINGBUF:
            raise EventsError("map: %s is a map of type %d, not a ring buffer (type %d)"
                              % (path, info["type"], BPF_MAP_TYPE_RINGBUF))
        codec = record_codec(info["id"], record_type, path) if record_type else None
        records = _drops.read_records(fd, timeout, count, consume)
    return {"events": [decode(record, codec) for record in records],
            "map": {"name": info["name"], "id": info["id"], "path": path}}
