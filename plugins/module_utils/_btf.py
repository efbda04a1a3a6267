# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A map's key and value types from the kernel's BTF, through libbpf.

type_tree() turns one BTF type into a plain description (nested dicts) that the map
codecs in _maps.py build on, so they never touch libbpf:

  {"kind": "int", "size": 4, "signed": False, "char": False}
  {"kind": "enum", "size": 4, "signed": False, "names": {0: "PASS", 1: "DROP"}}
  {"kind": "array", "size": 16, "count": 16, "element": {...}}
  {"kind": "struct", "name": "rule", "size": 24,
   "members": [{"name": "action", "bit_offset": 0, "bit_size": 0, "type": {...}}]}
  {"kind": "bytes", "size": 8}     (unions, floats, anything without a natural form)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes

from ansible_collections.xdpfleet.xdp.plugins.module_utils._libbpf import LibbpfError, library

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG, KIND_ENUM64 = 8, 9, 10, 11, 18, 19
QUALIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)
INT_SIGNED, INT_CHAR = 1, 2
MAX_DEPTH = 32


class _Array(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("index_type", ctypes.c_uint32), ("nelems", ctypes.c_uint32)]


class _Member(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


class _Enum(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


class _Enum64(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val_lo32", ctypes.c_uint32), ("val_hi32", ctypes.c_uint32)]


class KernelBtf:
    """One BTF object of the kernel, by id (None: the kernel's own, vmlinux); use as a context manager so libbpf
    frees it."""

    def __init__(self, btf_id=None):
        self._lib = library()
        if btf_id is None:
            self._pointer = self._lib.btf__load_vmlinux_btf()
        else:
            self._pointer = self._lib.btf__load_from_kernel_by_id(btf_id)
        if not self._pointer:
            raise LibbpfError("cannot load BTF %s from the kernel" % ("vmlinux" if btf_id is None else "id %d" % btf_id),
                              ctypes.get_errno())

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._lib.btf__free(self._pointer)

    def type_tree(self, type_id, depth=0):
        """The description of type_id, typedefs and qualifiers resolved."""
        if depth > MAX_DEPTH:
            raise LibbpfError("BTF type %d nests deeper than %d levels" % (type_id, MAX_DEPTH))
        type_id = self._resolve(type_id)
        btf_type = self._lib.btf__type_by_id(self._pointer, type_id).contents
        kind, size = btf_type.kind, self._size(type_id)
        if kind == KIND_INT:
            encoding = btf_type.following(ctypes.c_uint32, 1)[0] >> 24
            return {"kind": "int", "size": size, "signed": bool(encoding & INT_SIGNED),
                    "char": bool(encoding & INT_CHAR) or self._name(btf_type.name_off) == "char"}
        if kind == KIND_PTR:
            return {"kind": "int", "size": size, "signed": False, "char": False}
        if kind in (KIND_ENUM, KIND_ENUM64):
            return self._enum(btf_type, size)
        if kind == KIND_ARRAY:
            array = btf_type.following(_Array, 1)[0]
            return {"kind": "array", "size": size, "count": array.nelems,
                    "element": self.type_tree(array.type, depth + 1)}
        if kind == KIND_STRUCT:
            return {"kind": "struct", "name": self._name(btf_type.name_off), "size": size,
                    "members": self._members(btf_type, depth)}
        return {"kind": "bytes", "size": size}

    def struct_tree(self, name):
        """The description of the struct called name, or None when this BTF has none."""
        type_id = self._lib.btf__find_by_name_kind(self._pointer, name.encode(), KIND_STRUCT)
        return self.type_tree(type_id) if type_id > 0 else None

    def enum_names(self, name):
        """{value: name} of the enum called name, {} when this BTF has none."""
        type_id = self._lib.btf__find_by_name_kind(self._pointer, name.encode(), KIND_ENUM)
        return self.type_tree(type_id)["names"] if type_id > 0 else {}

    def _resolve(self, type_id):
        resolved = self._lib.btf__resolve_type(self._pointer, type_id)
        if resolved < 0:
            raise LibbpfError("cannot resolve BTF type %d" % type_id, -resolved)
        return resolved

    def _size(self, type_id):
        size = self._lib.btf__resolve_size(self._pointer, type_id)
        if size < 0:
            raise LibbpfError("cannot size BTF type %d" % type_id, -size)
        return size

    def _name(self, offset):
        name = self._lib.btf__name_by_offset(self._pointer, offset)
        return name.decode() if name else ""

    def _enum(self, btf_type, size):
        if btf_type.kind == KIND_ENUM:
            names = {value.val: self._name(value.name_off) for value in btf_type.following(_Enum)}
        else:
            names = {value.val_hi32 << 32 | value.val_lo32: self._name(value.name_off)
                     for value in btf_type.following(_Enum64)}
        return {"kind": "enum", "size": size, "signed": btf_type.kind_flag, "names": names}

    def _members(self, btf_type, depth):
        members = []
        for member in btf_type.following(_Member):
            bit_offset, bit_size = member.offset, 0
            if btf_type.kind_flag:  # the struct has bitfields
                bit_offset, bit_size = member.offset & 0xffffff, member.offset >> 24
            members.append({"name": self._name(member.name_off), "bit_offset": bit_offset, "bit_size": bit_size,
                            "type": self.type_tree(member.type, depth + 1)})
        return members


def map_type_trees(btf_id, key_type_id, value_type_id):
    """(key description, value description) of a map; None where the map has no BTF for it."""
    if not btf_id:
        return None, None
    with KernelBtf(btf_id) as btf:
        return tuple(btf.type_tree(type_id) if type_id else None for type_id in (key_type_id, value_type_id))
