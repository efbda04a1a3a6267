# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed, idempotent management of the entries of a pinned BPF map (xdpfleet.xdp.xdp_map).

Three layers, each usable without Ansible:
- codecs turn keys and values between map bytes and plain data (ints, strings, lists,
  dicts), built from the map's BTF (see _btf.py) or from a named simple type;
- plan() computes, from the current and the desired entries, what to write and remove
  for a state, touching the kernel not at all;
- PinnedMap reads and writes the kernel map in batches, and manage() ties it together.

Per-CPU maps are treated as counters. An entry's value is the sum over every possible
CPU (integer fields summed; strings, addresses and bytes taken from CPU 0). An entry that
exists keeps its per-CPU values in every state unless reset_counters is set; an entry
that is written gets the value in CPU 0's slot and zero in every other possible CPU's
slot, so that the sum, which gathered reports, is exactly the value written.

Array maps cannot delete: an element whose bytes are all zero counts as absent, and
removing an element writes zeros.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import json
import os
import struct
import sys

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._btf import map_type_trees
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError


MAP_TYPES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
             10: "lru_percpu_hash", 11: "lpm_trie"}
PER_CPU_TYPES = (5, 6, 10)
ARRAY_TYPES = (2, 6)
EVICTING_TYPES = (9, 10)


class MapError(XdpfleetError):
    """The map cannot be managed as asked; nothing was changed."""


class InputError(MapError):
    """A bad option or entry; the message starts with the field it is about."""

    def __init__(self, where, message):
        super(InputError, self).__init__("%s: %s" % (where, message))


# --- codecs -------------------------------------------------------------------------------

class IntCodec:
    def __init__(self, size, signed=False):
        self.size, self.signed = size, signed
        self.name = "%s%d" % ("s" if signed else "u", size * 8)

    def encode(self, value, where):
        number = parse_int(value, where)
        check_range(number, self.size * 8, self.signed, self.name, where)
        return number.to_bytes(self.size, sys.byteorder, signed=self.signed)

    def decode(self, data):
        return int.from_bytes(data, sys.byteorder, signed=self.signed)

    @staticmethod
    def combine(values):
        return sum(values)


class FirstOfCpus:
    """Values that do not add up (names, strings, addresses): a per-CPU map shows CPU 0's."""

    @staticmethod
    def combine(values):
        return values[0]


class EnumCodec(FirstOfCpus, IntCodec):
    """An enum: decoded to its enumerator's name where it has one; encoded from a name or a number."""

    def __init__(self, size, signed, names):
        super(EnumCodec, self).__init__(size, signed)
        self.names = names
        self.numbers = dict((name, number) for number, name in names.items())

    def encode(self, value, where):
        if value in self.numbers:
            return super(EnumCodec, self).encode(self.numbers[value], where)
        try:
            return super(EnumCodec, self).encode(value, where)
        except InputError:
            raise InputError(where, "%r is neither one of %s nor a number that fits"
                             % (value, ", ".join(sorted(self.numbers))))

    def decode(self, data):
        number = super(EnumCodec, self).decode(data)
        return self.names.get(number, number)


class CharsCodec(FirstOfCpus):
    """A char array: a string, NUL-padded."""

    def __init__(self, size):
        self.size = size

    def encode(self, value, where):
        if not isinstance(value, str):
            raise InputError(where, "%r is not a string" % (value,))
        data = value.encode("utf-8")
        if len(data) > self.size:
            raise InputError(where, "%r is %d bytes long, the field holds %d" % (value, len(data), self.size))
        return data.ljust(self.size, b"\0")

    def decode(self, data):
        return data.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


class BytesCodec(FirstOfCpus):
    """Raw bytes as lowercase hex; accepts 'c0ffee', '0xc0ffee', 'c0:ff:ee' or 'c0 ff ee'."""

    def __init__(self, size):
        self.size = size

    def encode(self, value, where):
        text = value if isinstance(value, str) else ""
        digits = text[2:] if text.lower().startswith("0x") else text
        try:
            data = bytes.fromhex(digits.replace(":", "").replace(" ", ""))
        except ValueError:
            data = None
        if data is None or not text:
            raise InputError(where, "%r is not a hex string" % (value,))
        if len(data) != self.size:
            raise InputError(where, "%r is %d bytes, expected %d" % (value, len(data), self.size))
        return data

    def decode(self, data):
        return data.hex()


class AddressCodec(FirstOfCpus):
    """An IPv4 or IPv6 address in network byte order."""

    def __init__(self, version):
        self.version, self.size = version, 4 if version == 4 else 16

    def encode(self, value, where):
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            address = None
        if address is None or address.version != self.version:
            raise InputError(where, "%r is not an IPv%d address" % (value, self.version))
        return address.packed

    def decode(self, data):
        return str(ipaddress.ip_address(data))


class CidrCodec(FirstOfCpus):
    """An LPM trie key: prefix length (u32, host order) then the address (network order)."""

    def __init__(self, version):
        self.version = version
        self.address = AddressCodec(version)
        self.size = 4 + self.address.size

    def encode(self, value, where):
        try:
            network = ipaddress.ip_network(value, strict=False)
        except (ValueError, TypeError):
            network = None
        if network is None or network.version != self.version:
            raise InputError(where, "%r is not an IPv%d prefix" % (value, self.version))
        if network.network_address != ipaddress.ip_interface(value).ip:
            raise InputError(where, "%r has host bits set (the prefix is %s)" % (value, network))
        return struct.pack("=I", network.prefixlen) + network.network_address.packed

    def decode(self, data):
        return "%s/%d" % (self.address.decode(data[4:]), struct.unpack("=I", data[:4])[0])


class MacCodec(FirstOfCpus):
    size = 6

    def encode(self, value, where):
        text = value.replace("-", ":") if isinstance(value, str) else ""
        parts = text.split(":")
        try:
            data = bytes(int(part, 16) for part in parts if len(part) in (1, 2))
        except ValueError:
            data = b""
        if len(parts) != 6 or len(data) != 6:
            raise InputError(where, "%r is not a MAC address" % (value,))
        return data

    def decode(self, data):
        return ":".join("%02x" % byte for byte in data)


class ArrayCodec:
    def __init__(self, element, count):
        self.element, self.count = element, count
        self.size = element.size * count

    def encode(self, value, where):
        if not isinstance(value, list) or len(value) != self.count:
            raise InputError(where, "%r is not a list of %d elements" % (value, self.count))
        return b"".join(self.element.encode(item, "%s[%d]" % (where, index)) for index, item in enumerate(value))

    def decode(self, data):
        width = self.element.size
        return [self.element.decode(data[index * width:(index + 1) * width]) for index in range(self.count)]

    def combine(self, values):
        return [self.element.combine(list(column)) for column in zip(*values)]


class Member:
    def __init__(self, name, bit_offset, bit_size, codec):
        self.name, self.bit_offset, self.bit_size, self.codec = name, bit_offset, bit_size, codec


class StructCodec:
    """A struct as a dict of its fields; fields left out encode as zero. Bitfields are little-endian."""

    def __init__(self, size, members):
        self.size, self.members = size, members
        self.names = [member.name for member in members]

    def encode(self, value, where):
        if not isinstance(value, dict):
            raise InputError(where, "%r is not a dict of the fields %s" % (value, ", ".join(self.names)))
        unknown = sorted(set(value) - set(self.names), key=str)
        if unknown:
            raise InputError("%s.%s" % (where, unknown[0]), "no such field (the fields are %s)" % ", ".join(self.names))
        data = bytearray(self.size)
        bits = 0
        for member in self.members:
            if member.name not in value:
                continue
            field = "%s.%s" % (where, member.name)
            if member.bit_size:
                bits |= self._bitfield(member, value[member.name], field) << member.bit_offset
            else:
                start = member.bit_offset // 8
                data[start:start + member.codec.size] = member.codec.encode(value[member.name], field)
        whole = int.from_bytes(bytes(data), "little") | bits
        return whole.to_bytes(self.size, "little")

    @staticmethod
    def _bitfield(member, value, where):
        number = parse_int(getattr(member.codec, "numbers", {}).get(value, value), where)
        check_range(number, member.bit_size, member.codec.signed, "a %d-bit field" % member.bit_size, where)
        return number & ((1 << member.bit_size) - 1)

    def decode(self, data):
        return dict((member.name, self._decode_member(member, data)) for member in self.members)

    @staticmethod
    def _decode_member(member, data):
        if not member.bit_size:
            start = member.bit_offset // 8
            return member.codec.decode(data[start:start + member.codec.size])
        number = int.from_bytes(data, "little") >> member.bit_offset & ((1 << member.bit_size) - 1)
        if member.codec.signed and number >> (member.bit_size - 1):
            number -= 1 << member.bit_size
        width = member.codec.size
        return member.codec.decode(number.to_bytes(width, sys.byteorder, signed=member.codec.signed))

    def combine(self, values):
        return dict((member.name, member.codec.combine([value[member.name] for value in values]))
                    for member in self.members)


def parse_int(value, where):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(value, 0)
    except (TypeError, ValueError):
        raise InputError(where, "%r is not an integer" % (value,))


def check_range(number, bits, signed, type_name, where):
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= number <= high:
        raise InputError(where, "%d is out of range for %s (%d..%d)" % (number, type_name, low, high))


SIMPLE_TYPES = {
    "u8": IntCodec(1), "u16": IntCodec(2), "u32": IntCodec(4), "u64": IntCodec(8),
    "ipv4": AddressCodec(4), "ipv6": AddressCodec(6), "cidr4": CidrCodec(4), "cidr6": CidrCodec(6),
    "mac": MacCodec(),
}


def codec_from_tree(tree):
    """A codec for a type description from _btf.type_tree()."""
    kind = tree["kind"]
    if kind == "int":
        return IntCodec(tree["size"], tree["signed"]) if tree["size"] in (1, 2, 4, 8) else BytesCodec(tree["size"])
    if kind == "enum":
        return EnumCodec(tree["size"], tree["signed"], tree["names"])
    if kind == "array":
        element = tree["element"]
        if element["kind"] == "int" and element["size"] == 1 and element["char"]:
            return CharsCodec(tree["size"])
        return ArrayCodec(codec_from_tree(element), tree["count"])
    if kind == "struct":
        return StructCodec(tree["size"], list(_members(tree["members"], 0)))
    return BytesCodec(tree["size"])


def _members(members, base_offset):
    """Struct members; the fields of anonymous nested structs are lifted into the parent."""
    for member in members:
        offset = base_offset + member["bit_offset"]
        if not member["name"] and member["type"]["kind"] == "struct":
            yield from _members(member["type"]["members"], offset)
        else:
            name = member["name"] or "_at%d" % (offset // 8)
            yield Member(name, offset, member["bit_size"], codec_from_tree(member["type"]))


def choose_codec(role, type_name, tree, size):
    """The codec for keys or values: the named type if given, else the BTF's, else hex bytes."""
    if type_name == "hex" or (type_name is None and tree is None):
        return BytesCodec(size)
    codec = SIMPLE_TYPES[type_name] if type_name else codec_from_tree(tree)
    if codec.size != size:
        option = "%s_type" % role if type_name else "the map's BTF %s type" % role
        raise InputError(option, "%s is %d bytes but the map's %ss are %d bytes"
                         % (type_name or "it", codec.size, role, size))
    return codec


# --- planning --------------------------------------------------------------------------------

class Layout:
    """What plan() needs to know about a map besides its entries."""

    def __init__(self, key_codec, value_codec, cpus=0, is_array=False):
        self.key_codec, self.value_codec = key_codec, value_codec
        self.per_cpu, self.cpus, self.is_array = bool(cpus), max(cpus, 1), is_array
        self.zero_value = value_codec.decode(bytes(value_codec.size))


class Plan:
    def __init__(self):
        self.writes = {}      # key bytes -> value (plain data) to write
        self.removals = []    # key bytes to delete (arrays: to zero)
        self.added = self.changed = 0


def encode_entries(entries, layout, state):
    """{key bytes: given value}, in order; a bad or repeated key, or a missing value, names its entry."""
    desired, first_seen = {}, {}
    for index, entry in enumerate(entries):
        where = "entries[%d]" % index
        if not isinstance(entry, dict) or "key" not in entry or entry["key"] is None:
            raise InputError(where, "needs a key")
        key = layout.key_codec.encode(entry["key"], where + ".key")
        if key in first_seen:
            raise InputError(where + ".key", "%r repeats the key of entries[%d]" % (entry["key"], first_seen[key]))
        first_seen[key] = index
        if state != "deleted" and entry.get("value") is None:
            raise InputError(where + ".value", "is required with state=%s" % state)
        desired[key] = entry.get("value")
    return desired


def canonical(value, layout, where):
    """The value as it reads back from the map (names for enums, zeros for left-out fields)."""
    return layout.value_codec.decode(layout.value_codec.encode(value, where))


def overlay(current, given):
    """merged on a struct value: the fields given replace, the others keep their current value."""
    if not (isinstance(current, dict) and isinstance(given, dict)):
        return given
    result = dict(current)
    for name, value in given.items():
        result[name] = overlay(current.get(name), value)
    return result


def plan(state, current, desired, layout, reset_counters=False):
    """What to write and remove to reach `state`.

    current: {key bytes: value} of the entries present (per-CPU: summed; arrays: non-zero only);
    desired: {key bytes: given value} from encode_entries(), or None for no entries at all.
    """
    result = Plan()
    if state == "gathered":
        return result
    if state == "deleted":
        keys = current if desired is None else [key for key in desired if key in current]
        result.removals = list(keys)
        return result
    positions = dict((key, index) for index, key in enumerate(desired or {}))
    for key, given in (desired or {}).items():
        _plan_write(result, key, given, current, layout, state, reset_counters, positions[key])
    if state == "overridden":
        result.removals = [key for key in current if key not in (desired or {})]
    return result


def _plan_write(result, key, given, current, layout, state, reset_counters, index):
    where = "entries[%d].value" % index
    present = key in current
    if present and layout.per_cpu and not reset_counters:
        canonical(given, layout, where)  # still refuse a bad value, even where it would not be written
        return
    base = current[key] if present and state == "merged" and not layout.per_cpu else None
    value = canonical(overlay(base, given) if base is not None else given, layout, where)
    before = current[key] if present else layout.zero_value if layout.is_array else None
    if value == before:
        return
    result.writes[key] = value
    if present:
        result.changed += 1
    else:
        result.added += 1


def apply_plan(current, plan_, layout):
    """The entries after the plan, as the kernel will hold them ({key bytes: value})."""
    after = dict((key, value) for key, value in current.items() if key not in plan_.removals)
    for key, value in plan_.writes.items():
        if layout.is_array and value == layout.zero_value:
            after.pop(key, None)
        else:
            after[key] = value
    return after


# --- the kernel map ---------------------------------------------------------------------------

class PinnedMap:
    """A map opened from its bpffs pin; use as a context manager so the fd is closed."""

    def __init__(self, path, key_type=None, value_type=None):
        self.path = path
        self.fd = _open_map(path)
        try:
            self.info = libbpf.map_info(self.fd)
            self._check_type()
            self.layout = self._layout(key_type, value_type)
        except BaseException:
            os.close(self.fd)
            raise
        self.cpus = self.layout.cpus
        self._raw = {}
        self.slot_size = libbpf.percpu_value_size(self.info["value_size"]) if self.layout.per_cpu \
            else self.info["value_size"]

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        os.close(self.fd)

    @property
    def name(self):
        return self.info["name"]

    def _check_type(self):
        if self.info["type"] not in MAP_TYPES:
            raise MapError("map %s (%s) has type %d, which xdp_map does not manage (it manages %s)"
                           % (self.name, self.path, self.info["type"], ", ".join(sorted(MAP_TYPES.values()))))

    def _layout(self, key_type, value_type):
        key_tree, value_tree = map_type_trees(
            self.info["btf_id"], self.info["btf_key_type_id"], self.info["btf_value_type_id"])
        key_codec = choose_codec("key", key_type, key_tree, self.info["key_size"])
        value_codec = choose_codec("value", value_type, value_tree, self.info["value_size"])
        cpus = libbpf.num_possible_cpus() if self.info["type"] in PER_CPU_TYPES else 0
        return Layout(key_codec, value_codec, cpus=cpus, is_array=self.info["type"] in ARRAY_TYPES)

    def summary(self):
        return {"path": self.path, "name": self.name, "id": self.info["id"], "type": MAP_TYPES[self.info["type"]],
                "key_size": self.info["key_size"], "value_size": self.info["value_size"],
                "max_entries": self.info["max_entries"], "per_cpu": self.layout.per_cpu,
                "btf": bool(self.info["btf_id"])}

    def read(self):
        """({key bytes: value}, {key bytes: [value per possible CPU]}) of the present entries;
        the second is empty unless the map is per-CPU."""
        raw_items = libbpf.map_items(self.fd, self.info["key_size"], self.slot_size * self.cpus,
                                     self.info["max_entries"])
        self._raw = dict(raw_items)
        if self.layout.is_array:
            zero = bytes(self.slot_size * self.cpus)
            raw_items = [(key, raw) for key, raw in raw_items if raw != zero]
        decode = self.layout.value_codec.decode
        if not self.layout.per_cpu:
            return dict((key, decode(raw)) for key, raw in raw_items), {}
        values, per_cpu = {}, {}
        for key, raw in raw_items:
            slots = [decode(raw[cpu * self.slot_size:][:self.info["value_size"]]) for cpu in range(self.cpus)]
            values[key], per_cpu[key] = self.layout.value_codec.combine(slots), slots
        return values, per_cpu

    def check_keys(self, keys, entries):
        """Array keys must be below max_entries; keys are in entries' order."""
        if not self.layout.is_array:
            return
        for index, key in enumerate(keys):
            number = int.from_bytes(key, sys.byteorder)
            if number >= self.info["max_entries"]:
                raise InputError("entries[%d].key" % index, "%r is out of range for array map %s (max_entries %d)"
                                 % (entries[index]["key"], self.name, self.info["max_entries"]))

    def check_capacity(self, current, plan_):
        if self.layout.is_array or self.info["type"] in EVICTING_TYPES:
            return
        needed = len(current) - len(plan_.removals) + plan_.added
        if needed > self.info["max_entries"]:
            raise MapError("map %s (%s) is full: it holds at most %d entries (max_entries) and would need %d; "
                           "nothing was changed" % (self.name, self.path, self.info["max_entries"], needed))

    def _raw_value(self, value):
        """CPU 0 gets the value, every other possible CPU zero (per-CPU maps)."""
        encoded = self.layout.value_codec.encode(value, "value")
        return encoded.ljust(self.slot_size, b"\0").ljust(self.slot_size * self.cpus, b"\0")

    def execute(self, plan_):
        """Writes the plan; should the kernel refuse part of it, puts back what was touched."""
        try:
            self._write(plan_)
        except libbpf.LibbpfError as error:
            self._restore(plan_)
            raise MapError("writing map %s (%s) failed, the entries it touched were put back: %s"
                           % (self.name, self.path, error))

    def _write(self, plan_):
        """Removals first, so that an overridden map never needs room for both old and new entries."""
        if self.layout.is_array:
            zeros = bytes(self.slot_size * self.cpus)
            libbpf.map_update_batch(self.fd, plan_.removals, [zeros] * len(plan_.removals))
        else:
            libbpf.map_delete_batch(self.fd, plan_.removals)
        keys = list(plan_.writes)
        libbpf.map_update_batch(self.fd, keys, [self._raw_value(plan_.writes[key]) for key in keys])

    def _restore(self, plan_):
        """The entries as read(); arrays hold every key, so only hash-like maps have new keys to drop."""
        old = [key for key in list(plan_.removals) + list(plan_.writes) if key in self._raw]
        libbpf.map_update_batch(self.fd, old, [self._raw[key] for key in old])
        for key in plan_.writes:
            if key not in self._raw:
                self._delete_if_stored(key)

    def _delete_if_stored(self, key):
        try:
            libbpf.map_delete(self.fd, key)
        except libbpf.LibbpfError as error:
            if error.errno != errno.EINVAL:  # a key the kernel finds invalid was never stored
                raise


def _open_map(path):
    try:
        fd = libbpf.obj_get(path)
    except libbpf.LibbpfError as error:
        if error.errno == errno.ENOENT:
            raise MapError("no pinned map at %s (is the program that owns it loaded and pinned?)" % path)
        raise MapError(str(error))
    with open("/proc/self/fdinfo/%d" % fd) as fdinfo:
        is_map = any(line.startswith("map_type:") for line in fdinfo)
    if not is_map:
        os.close(fd)
        raise MapError("%s is pinned but is not a map" % path)
    return fd


def map_path(name, interface=None, pin_dir=None):
    """A bpffs path as given, or the name in pin_dir (default /sys/fs/bpf/xdpfleet/<interface>)."""
    if os.path.isabs(name):
        return name
    if "/" in name or name in ("", ".", ".."):
        raise InputError("map", "%r is neither a map name nor an absolute path" % name)
    directory = pin_dir or (interface and _hostfs.default_pin_dir(interface))
    if not directory:
        raise InputError("map", "%r is a name, so pin_dir or interface is needed to find it" % name)
    return os.path.join(directory, name)


# --- results -------------------------------------------------------------------------------------

def entry_list(entries, layout, per_cpu=None):
    """[{key, value[, per_cpu]}] sorted by key bytes, as the module returns them."""
    result = []
    for key in sorted(entries):
        item = {"key": layout.key_codec.decode(key), "value": entries[key]}
        if per_cpu is not None:
            item["per_cpu"] = per_cpu.get(key) or _written_slots(entries[key], layout)
        result.append(item)
    return result


def _written_slots(value, layout):
    return [value] + [layout.zero_value] * (layout.cpus - 1)


def _diff_text(entries, keys, layout):
    lines = ["%s: %s" % (json.dumps(layout.key_codec.decode(key), sort_keys=True),
                         json.dumps(entries[key], sort_keys=True))
             for key in sorted(keys) if key in entries]
    return "".join(line + "\n" for line in lines)


def diff(before, after, layout):
    touched = [key for key in set(before) | set(after) if before.get(key) != after.get(key)]
    return {"before": _diff_text(before, touched, layout), "after": _diff_text(after, touched, layout)}


# --- the module's one call --------------------------------------------------------------------------

def manage(params, check_mode=False, diff_mode=False):
    """Brings the map to params['state']; returns the module result. Raises MapError, nothing changed."""
    state, entries = params["state"], params.get("entries")
    if state == "gathered" and entries:
        raise InputError("entries", "is not used with state=gathered")
    if state in ("merged", "replaced", "overridden") and entries is None:
        raise InputError("entries", "is required with state=%s" % state)
    path = map_path(params["map"], params.get("interface"), params.get("pin_dir"))
    with PinnedMap(path, params.get("key_type"), params.get("value_type")) as bpf_map:
        return _manage(bpf_map, params, entries, check_mode, diff_mode)


def _manage(bpf_map, params, entries, check_mode, diff_mode):
    layout, state = bpf_map.layout, params["state"]
    desired = None if entries is None else encode_entries(entries, layout, state)
    if desired:
        bpf_map.check_keys(list(desired), entries)
    current, per_cpu = bpf_map.read()
    want_per_cpu = per_cpu if params.get("per_cpu") and layout.per_cpu else None
    result = {"changed": False, "map": bpf_map.summary()}
    if state == "gathered":
        result["gathered"] = entry_list(current, layout, want_per_cpu)
        return result
    plan_ = plan(state, current, desired, layout, params.get("reset_counters", False))
    bpf_map.check_capacity(current, plan_)
    after = apply_plan(current, plan_, layout)
    changed = bool(plan_.writes or plan_.removals)
    result.update(changed=changed, before=entry_list(current, layout, want_per_cpu),
                  summary={"added": plan_.added, "changed": plan_.changed, "removed": len(plan_.removals)})
    if changed:
        if not check_mode:
            bpf_map.execute(plan_)
        result["after"] = entry_list(after, layout, _after_per_cpu(want_per_cpu, plan_))
        if diff_mode:
            result["diff"] = diff(current, after, layout)
    return result


def _after_per_cpu(per_cpu, plan_):
    if per_cpu is None:
        return None
    return dict((key, slots) for key, slots in per_cpu.items() if key not in plan_.writes)
