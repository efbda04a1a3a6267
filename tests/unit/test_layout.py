"""_layout against the BTF of the compiled firewall: every struct, field offset and size, and the enums the
Python side mirrors, so that C and Python cannot drift."""

import ctypes
import subprocess
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _btf, _layout, _libbpf, _object_load

REPO = Path(__file__).resolve().parents[2]
BTF_KIND_STRUCT, BTF_KIND_ENUM = 4, 6


@pytest.fixture(scope="module")
def firewall_object(tmp_path_factory):
    build = tmp_path_factory.mktemp("bpf")
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "BUILD=%s" % build], check=True)
    return str(build / "xdp_firewall.o")


@pytest.fixture(scope="module")
def firewall_btf(firewall_object):
    """{struct or enum name: its BTF description} from the loaded firewall object."""
    with _libbpf.BpfObject(firewall_object) as firewall:
        firewall.load()
        btf_id = _libbpf.map_info(next(m.fd for m in firewall.maps if m.name == "xf_rules_0"))["btf_id"]
        with _btf.KernelBtf(btf_id) as btf:
            find = btf._lib.btf__find_by_name_kind
            find.restype, find.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
            described = {}
            for name, kind in (("xf_rule", BTF_KIND_STRUCT), ("xf_chain", BTF_KIND_STRUCT),
                               ("xf_slot_meta", BTF_KIND_STRUCT), ("xf_config", BTF_KIND_STRUCT),
                               ("xf_datarec", BTF_KIND_STRUCT), ("xf_event", BTF_KIND_STRUCT), ("xf_hosts4", BTF_KIND_STRUCT),
                               ("xf_limit_key", BTF_KIND_STRUCT), ("xf_limit_state", BTF_KIND_STRUCT),
                               ("xf_limit_slot", BTF_KIND_STRUCT), ("xf_rule_flags", BTF_KIND_ENUM),
                               ("xf_prefix_map", BTF_KIND_ENUM), ("xf_more_flags", BTF_KIND_ENUM),
                               ("xf_limit_per", BTF_KIND_ENUM), ("xf_clock_entry", BTF_KIND_ENUM)):
                type_id = find(btf._pointer, name.encode(), kind)
                assert type_id > 0, "%s is not in the firewall's BTF" % name
                described[name] = btf.type_tree(type_id)
            return described


def _members(struct):
    """(name, byte offset, size, element size) of each member; element size: that of an array's elements."""
    result = []
    for member in struct["members"]:
        member_type = member["type"]
        element = member_type["element"]["size"] if member_type["kind"] == "array" else member_type["size"]
        result.append((member["name"], member["bit_offset"] // 8, member_type["size"], element))
    return result


def assert_layout_matches(layout, struct):
    """Each field of layout lies within the BTF member it is named after, as the whole member or as one element of
    an array member; together the fields cover the struct."""
    assert layout.size == struct["size"], layout.name
    members = _members(struct)
    covered = 0
    for field, offset, size in _field_sizes(layout):
        name, start, whole, element = next(member for member in members if member[1] <= offset < member[1] + member[2])
        assert field.startswith(name), "%s.%s lies in member %s" % (layout.name, field, name)
        assert size in (whole, element) and offset + size <= start + whole, "%s.%s: size %d" % (layout.name, field, size)
        covered += size
    assert covered == struct["size"], layout.name


def _field_sizes(layout):
    fields = [field for field, _code in layout.fields]
    ends = [layout.offset[field] for field in fields[1:]] + [layout.size]
    return [(field, layout.offset[field], end - layout.offset[field]) for field, end in zip(fields, ends)]


@pytest.mark.parametrize("layout, struct", [(_layout.RULE, "xf_rule"), (_layout.CHAIN, "xf_chain"),
                                            (_layout.SLOT_META, "xf_slot_meta"), (_layout.DATAREC, "xf_datarec"),
                                            (_layout.EVENT, "xf_event"), (_layout.HOSTS4, "xf_hosts4"),
                                            (_layout.LIMIT_KEY, "xf_limit_key"),
                                            (_layout.LIMIT_STATE, "xf_limit_state"),
                                            (_layout.LIMIT_SLOT, "xf_limit_slot")])
def test_each_layout_is_the_struct_the_program_uses(firewall_btf, layout, struct):
    assert_layout_matches(layout, firewall_btf[struct])


def test_the_config_is_its_head_and_two_slot_metas(firewall_btf):
    config = firewall_btf["xf_config"]
    assert config["size"] == _layout.CONFIG_SIZE
    members = _members(config)
    assert members[:2] == [("active", 0, 4, 4), ("sample_rate", 4, 4, 4)]
    assert members[2] == ("slot", _layout.CONFIG_HEAD.size, 2 * _layout.SLOT_META.size, _layout.SLOT_META.size)


def test_flags_and_prefix_map_order_are_the_programs(firewall_btf):
    flags = dict((name, value) for value, name in firewall_btf["xf_rule_flags"]["names"].items())
    assert (flags["XF_HAS_PROTO"], flags["XF_HAS_PORT"], flags["XF_HAS_DST"], flags["XF_SRC_SET"],
            flags["XF_DST_SET"]) == \
        (_layout.HAS_PROTO, _layout.HAS_PORT, _layout.HAS_DST, _layout.SRC_SET, _layout.DST_SET)
    more = dict((name, value) for value, name in firewall_btf["xf_more_flags"]["names"].items())
    assert [more["XF_" + name] for name in ("SPORT", "TCP_FLAGS", "ICMP_TYPE", "ICMP_CODE", "LENGTH", "TTL",
                                            "EXPIRES")] == \
        [_layout.MORE_SPORT, _layout.MORE_TCP_FLAGS, _layout.MORE_ICMP_TYPE, _layout.MORE_ICMP_CODE,
         _layout.MORE_LENGTH, _layout.MORE_TTL, _layout.MORE_EXPIRES]
    per = dict((name, value) for value, name in firewall_btf["xf_limit_per"]["names"].items())
    assert (per["XF_PER_RULE"], per["XF_PER_SOURCE"]) == (_layout.PER_RULE, _layout.PER_SOURCE)
    clock = dict((name, value) for value, name in firewall_btf["xf_clock_entry"]["names"].items())
    assert (clock["XF_WALL_MINUS_BOOT"], clock["XF_TICK_NS"]) == (_layout.CLOCK_WALL_MINUS_BOOT, _layout.CLOCK_TICK_NS)
    order = firewall_btf["xf_prefix_map"]["names"]
    assert [order[index] for index in range(len(_layout.PREFIX_MAPS))] == \
        ["XF_%s" % name.upper() for name in _layout.PREFIX_MAPS]


def test_a_drifted_layout_is_caught(firewall_btf):
    """The check fails when Python and C disagree: a field moved, or one too few."""
    swapped = _layout.Layout("xf_rule", [("flags", "B"), ("action", "B")] + list(_layout.RULE.fields[2:]))
    with pytest.raises(AssertionError):
        assert_layout_matches(swapped, firewall_btf["xf_rule"])
    short = _layout.Layout("xf_datarec", [("packets", "Q")])
    with pytest.raises(AssertionError):
        assert_layout_matches(short, firewall_btf["xf_datarec"])


def test_the_schema_version_is_the_objects(firewall_object):
    """Bump both together: the loader records the object's version with the maps (see _object_load)."""
    with _libbpf.BpfObject(firewall_object) as firewall:
        assert _object_load.declared_schema_version(firewall) == _layout.XF_SCHEMA_VERSION


def test_capacities_are_the_programs(firewall_object):
    with _libbpf.BpfObject(firewall_object) as firewall:
        firewall.load()
        sizes = dict((bpf_map.name, _libbpf.map_info(bpf_map.fd)["max_entries"]) for bpf_map in firewall.maps)
    assert sizes["xf_rules_0"] == sizes["xf_hits"] == sizes["xf_passed"] == _layout.MAX_RULES
    assert sizes["xf_limits"] == _layout.LIMIT_SOURCES
    assert set(sizes["xf_%s_%d" % (name, slot)] for name in _layout.PREFIX_MAPS for slot in (0, 1)) == \
        {_layout.MAX_PREFIXES}
    assert set(sizes["xf_%s_%d" % (table, slot)] for table in _layout.HOST_TABLES.values() for slot in (0, 1)) == \
        {_layout.HOST_BUCKETS}
