# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which XDP program an interface runs and whether xdpfleet attached it, read from the kernel alone.

xdpfleet keeps a program's identity in a small frozen ARRAY map named xdpfleet_meta bound to the
program (BPF_PROG_BIND_MAP): the object's hash, the program's name, its pin directory and the
schema version of its maps. So ownership and identity survive lost pins. The loader (_program)
writes that record; the facts and the drop reader only read it, and so import this file alone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import struct

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import Link

META_MAP_NAME = "xdpfleet_meta"
META_MAGIC = b"xdpfleet"
META_SCHEMA = 1
META_FORMAT = "<8sII32s64s256s"  # magic, schema, maps' schema version, sha256, program name, pin_dir
META_KEY = struct.pack("<I", 0)
OWNER_XDPFLEET, OWNER_FOREIGN = "xdpfleet", "foreign"
MAP_LAYOUT = ("type", "key_size", "value_size", "max_entries", "map_flags")
NOT_ATTACHED = {"attached": False, "prog_id": None, "name": None, "tag": None, "mode": None, "owner": None,
                "object_sha256": None, "program": None, "pin_dir": None, "map_schema_version": None, "maps": []}


def encode_meta(sha256_hex, program, pin_dir, map_schema_version):
    """The record of a program xdpfleet loads; map_schema_version is its object's (0: unversioned)."""
    return struct.pack(META_FORMAT, META_MAGIC, META_SCHEMA, map_schema_version, bytes.fromhex(sha256_hex),
                       program.encode(), pin_dir.encode())


def decode_meta(value):
    """The identity stored by xdpfleet, or None when value is not an xdpfleet record."""
    if value is None or len(value) < struct.calcsize(META_FORMAT):
        return None
    magic, schema, map_schema_version, digest, program, pin_dir = struct.unpack_from(META_FORMAT, value)
    if magic != META_MAGIC:
        return None
    return {"schema": schema, "object_sha256": digest.hex(), "program": program.rstrip(b"\0").decode(),
            "pin_dir": pin_dir.rstrip(b"\0").decode(), "map_schema_version": map_schema_version}


@contextlib.contextmanager
def opened(fd):
    try:
        yield fd
    finally:
        os.close(fd)


def is_internal_map(name):
    """libbpf names its global-variable maps <object>.data/.bss/.rodata; C map names have no dot."""
    return "." in name


def _read_maps(map_ids):
    """(user maps, xdpfleet meta record) of a program's map ids."""
    maps, meta = [], None
    for map_id in map_ids:
        with opened(libbpf.map_fd_by_id(map_id)) as fd:
            info = libbpf.map_info(fd)
            if info["name"] == META_MAP_NAME:
                meta = decode_meta(libbpf.map_lookup(fd, META_KEY, info["value_size"]))
            elif not is_internal_map(info["name"]):
                maps.append(dict((key, info[key]) for key in ("name", "id") + MAP_LAYOUT))
    return maps, meta


def describe_program(prog_id, mode):
    """What the kernel says about an attached program: name, tag, owner, object hash, maps and their schema."""
    with opened(libbpf.prog_fd_by_id(prog_id)) as fd:
        info = libbpf.prog_info(fd)
    maps, meta = _read_maps(info["map_ids"])
    meta = meta or {}
    return {"attached": True, "prog_id": prog_id, "name": info["name"], "tag": info["tag"], "mode": mode,
            "owner": OWNER_XDPFLEET if meta else OWNER_FOREIGN, "object_sha256": meta.get("object_sha256"),
            "program": meta.get("program"), "pin_dir": meta.get("pin_dir"),
            "map_schema_version": meta.get("map_schema_version"), "maps": maps}


def describe_link(link):
    prog_id, mode = link.attached()
    return describe_program(prog_id, mode) if prog_id else dict(NOT_ATTACHED)


def describe(interface):
    """The XDP program attached to interface, described from the kernel alone."""
    return describe_link(Link(interface))


def pinned_map_id(path):
    """The id of the map pinned at path, or None when nothing (or no map) is pinned there."""
    try:
        fd = libbpf.obj_get(path)
    except libbpf.LibbpfError:
        return None
    with opened(fd):
        try:
            return libbpf.map_info(fd)["id"]
        except libbpf.LibbpfError:
            return None


def missing_pins(described, pin_dir):
    """The program's maps that are not pinned (as themselves) in pin_dir."""
    return [item for item in described["maps"]
            if pinned_map_id(_hostfs.pin_path(pin_dir, item["name"])) != item["id"]]
