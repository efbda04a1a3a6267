"""xdp_map's codecs and planning, without a kernel: bytes <-> data, and what each state writes."""

import struct
import sys

import pytest
from hypothesis import given, strategies as st

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _maps as maps


def u(size, signed=False):
    return {"kind": "int", "size": size, "signed": signed, "char": False}


CHAR = {"kind": "int", "size": 1, "signed": True, "char": True}
BACKEND = {
    "kind": "struct", "name": "backend", "size": 28, "members": [
        {"name": "label", "bit_offset": 0, "bit_size": 0,
         "type": {"kind": "array", "size": 12, "count": 12, "element": CHAR}},
        {"name": "verdict", "bit_offset": 96, "bit_size": 0,
         "type": {"kind": "enum", "size": 4, "signed": False, "names": {0: "PASS", 1: "DROP"}}},
        {"name": "ports", "bit_offset": 128, "bit_size": 0, "type": {
            "kind": "struct", "name": "port_range", "size": 4, "members": [
                {"name": "low", "bit_offset": 0, "bit_size": 0, "type": u(2)},
                {"name": "high", "bit_offset": 16, "bit_size": 0, "type": u(2)}]}},
        {"name": "mac", "bit_offset": 160, "bit_size": 0,
         "type": {"kind": "array", "size": 6, "count": 6, "element": u(1)}},
        {"name": "weight", "bit_offset": 208, "bit_size": 4, "type": u(1)},
        {"name": "healthy", "bit_offset": 212, "bit_size": 1, "type": u(1)},
    ]}
FULL_BACKEND = {"label": "web1", "verdict": "DROP", "ports": {"low": 80, "high": 443},
                "mac": [2, 0, 0, 0, 0, 1], "weight": 9, "healthy": 1}


def layout(value_tree=None, key_type="u32", value_type=None, cpus=0, is_array=False):
    value_size = value_tree["size"] if value_tree else maps.SIMPLE_TYPES[value_type].size
    return maps.Layout(maps.choose_codec("key", key_type, None, maps.SIMPLE_TYPES[key_type].size),
                       maps.choose_codec("value", value_type, value_tree, value_size), cpus=cpus, is_array=is_array)


# --- codecs -------------------------------------------------------------------------------

def test_struct_from_btf_encodes_at_the_c_offsets():
    codec = maps.codec_from_tree(BACKEND)
    data = codec.encode(FULL_BACKEND, "value")
    assert len(data) == 28
    assert data[:12] == b"web1" + bytes(8)
    assert struct.unpack("=IHH", data[12:20]) == (1, 80, 443)
    assert data[20:26] == bytes([2, 0, 0, 0, 0, 1])
    assert data[26] == 9 | 1 << 4 and data[27] == 0
    assert codec.decode(data) == FULL_BACKEND


def test_left_out_struct_fields_are_zero_and_enums_accept_numbers():
    codec = maps.codec_from_tree(BACKEND)
    assert codec.decode(codec.encode({"verdict": 1}, "v")) == {
        "label": "", "verdict": "DROP", "ports": {"low": 0, "high": 0}, "mac": [0] * 6, "weight": 0, "healthy": 0}
    assert codec.decode(codec.encode({"verdict": 7}, "v"))["verdict"] == 7


@pytest.mark.parametrize("value, message", [
    ({"ports": {"low": 70000}}, "entries[2].value.ports.low: 70000 is out of range for u16 (0..65535)"),
    ({"weight": 16}, "entries[2].value.weight: 16 is out of range for a 4-bit field (0..15)"),
    ({"label": "a-label-that-is-too-long"}, "entries[2].value.label: 'a-label-that-is-too-long' is 24 bytes long"),
    ({"mac": [1, 2]}, "entries[2].value.mac: [1, 2] is not a list of 6 elements"),
    ({"verdict": "REJECT"}, "entries[2].value.verdict: 'REJECT' is neither one of DROP, PASS"),
    ({"colour": 1}, "entries[2].value.colour: no such field (the fields are label, verdict, ports"),
    (5, "entries[2].value: 5 is not a dict of the fields label, verdict"),
])
def test_bad_struct_values_name_the_field(value, message):
    with pytest.raises(maps.InputError) as failure:
        maps.codec_from_tree(BACKEND).encode(value, "entries[2].value")
    assert str(failure.value).startswith(message)


def test_anonymous_struct_members_are_lifted_and_unions_are_hex():
    tree = {"kind": "struct", "name": "", "size": 8, "members": [
        {"name": "", "bit_offset": 0, "bit_size": 0, "type": {"kind": "struct", "name": "", "size": 4, "members": [
            {"name": "a", "bit_offset": 0, "bit_size": 0, "type": u(2)},
            {"name": "b", "bit_offset": 16, "bit_size": 0, "type": u(2, signed=True)}]}},
        {"name": "u", "bit_offset": 32, "bit_size": 0, "type": {"kind": "bytes", "size": 4}}]}
    codec = maps.codec_from_tree(tree)
    value = {"a": 1, "b": -2, "u": "deadbeef"}
    assert codec.decode(codec.encode(value, "v")) == value


@pytest.mark.parametrize("type_name, value, data", [
    ("u8", 255, b"\xff"),
    ("u16", "0x1234", (0x1234).to_bytes(2, sys.byteorder)),
    ("u64", 2 ** 64 - 1, b"\xff" * 8),
    ("ipv4", "198.18.0.1", bytes([198, 18, 0, 1])),
    ("ipv6", "2001:db8::1", bytes.fromhex("20010db8000000000000000000000001")),
    ("cidr4", "198.18.0.0/15", struct.pack("=I", 15) + bytes([198, 18, 0, 0])),
    ("cidr6", "2001:db8::/32", struct.pack("=I", 32) + bytes.fromhex("20010db8") + bytes(12)),
    ("mac", "02:00:00:aa:bb:0c", bytes([2, 0, 0, 0xaa, 0xbb, 0x0c])),
])
def test_simple_types_encode_and_read_back(type_name, value, data):
    codec = maps.SIMPLE_TYPES[type_name]
    assert codec.encode(value, "key") == data
    assert codec.encode(codec.decode(data), "key") == data


def test_hex_accepts_separators_and_checks_the_size():
    codec = maps.BytesCodec(3)
    assert [codec.encode(text, "k") for text in ("c0ffee", "0xC0FFEE", "c0:ff:ee", "c0 ff ee")] == [b"\xc0\xff\xee"] * 4
    assert codec.decode(b"\xc0\xff\xee") == "c0ffee"
    with pytest.raises(maps.InputError, match=r"^k: 'c0ff' is 2 bytes, expected 3$"):
        codec.encode("c0ff", "k")


@pytest.mark.parametrize("type_name, value, message", [
    ("ipv4", "198.18.0.300", "entries[2].key: '198.18.0.300' is not an IPv4 address"),
    ("ipv4", "2001:db8::1", "entries[2].key: '2001:db8::1' is not an IPv4 address"),
    ("cidr4", "198.18.0.5/24", "entries[2].key: '198.18.0.5/24' has host bits set (the prefix is 198.18.0.0/24)"),
    ("cidr6", "198.18.0.0/24", "entries[2].key: '198.18.0.0/24' is not an IPv6 prefix"),
    ("mac", "02:00:00:00:00", "entries[2].key: '02:00:00:00:00' is not a MAC address"),
    ("u8", 256, "entries[2].key: 256 is out of range for u8 (0..255)"),
    ("u32", "seven", "entries[2].key: 'seven' is not an integer"),
    ("u32", True, "entries[2].key: True is not an integer"),
])
def test_bad_simple_values_name_the_field(type_name, value, message):
    with pytest.raises(maps.InputError) as failure:
        maps.SIMPLE_TYPES[type_name].encode(value, "entries[2].key")
    assert str(failure.value) == message


def test_a_named_type_must_have_the_maps_size():
    with pytest.raises(maps.InputError, match="^key_type: u16 is 2 bytes but the map's keys are 4 bytes$"):
        maps.choose_codec("key", "u16", None, 4)
    assert isinstance(maps.choose_codec("value", None, None, 5), maps.BytesCodec)


@given(label=st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=12),
       ports=st.fixed_dictionaries({"low": st.integers(0, 65535), "high": st.integers(0, 65535)}),
       mac=st.lists(st.integers(0, 255), min_size=6, max_size=6),
       verdict=st.sampled_from(["PASS", "DROP", 5]), weight=st.integers(0, 15), healthy=st.integers(0, 1))
def test_struct_round_trip(**value):
    codec = maps.codec_from_tree(BACKEND)
    assert codec.decode(codec.encode(value, "v")) == value


def test_per_cpu_values_sum_integers_and_keep_cpu0_for_the_rest():
    codec = maps.codec_from_tree(BACKEND)
    slots = [dict(FULL_BACKEND, ports={"low": 1, "high": 2}), dict(FULL_BACKEND, label="other", verdict="PASS")]
    combined = codec.combine(slots)
    assert combined["ports"] == {"low": 81, "high": 445} and combined["mac"] == [4, 0, 0, 0, 0, 2]
    assert combined["label"] == "web1" and combined["verdict"] == "DROP"


# --- planning ------------------------------------------------------------------------------

def key(number):
    return number.to_bytes(4, sys.byteorder)


def entries(mapping):
    return [{"key": number, "value": value} for number, value in mapping.items()]


def run_plan(state, current, wanted, map_layout, reset_counters=False):
    desired = None if wanted is None else maps.encode_entries(wanted, map_layout, state)
    result = maps.plan(state, current, desired, map_layout, reset_counters)
    return result, maps.apply_plan(current, result, map_layout)


U32 = layout(value_type="u32")
CURRENT = {key(1): 10, key(2): 20, key(3): 30}


@pytest.mark.parametrize("state, wanted, after, counts", [
    ("merged", {2: 21, 4: 40}, {1: 10, 2: 21, 3: 30, 4: 40}, (1, 1, 0)),
    ("replaced", {2: 21, 4: 40}, {1: 10, 2: 21, 3: 30, 4: 40}, (1, 1, 0)),
    ("overridden", {2: 21, 4: 40}, {2: 21, 4: 40}, (1, 1, 2)),
    ("overridden", {1: 10, 2: 20, 3: 30}, {1: 10, 2: 20, 3: 30}, (0, 0, 0)),
    ("deleted", {2: None, 9: None}, {1: 10, 3: 30}, (0, 0, 1)),
    ("merged", {1: 10}, {1: 10, 2: 20, 3: 30}, (0, 0, 0)),
])
def test_each_state_acts_only_on_the_difference(state, wanted, after, counts):
    result, predicted = run_plan(state, dict(CURRENT), entries(wanted), U32)
    assert predicted == dict((key(number), value) for number, value in after.items())
    assert (result.added, result.changed, len(result.removals)) == counts
    assert set(result.writes) == set(key(n) for n, v in wanted.items() if v is not None and CURRENT.get(key(n)) != v)


def test_deleted_without_entries_removes_all_and_with_an_empty_list_none():
    assert run_plan("deleted", dict(CURRENT), None, U32)[1] == {}
    assert run_plan("deleted", dict(CURRENT), [], U32)[1] == CURRENT
    assert run_plan("overridden", dict(CURRENT), [], U32)[1] == {}


def test_merged_keeps_unnamed_struct_fields_and_replaced_zeroes_them():
    map_layout = layout(BACKEND)
    current = {key(1): maps.canonical(FULL_BACKEND, map_layout, "v")}
    merged = run_plan("merged", current, [{"key": 1, "value": {"weight": 3}}], map_layout)[1][key(1)]
    assert merged == dict(FULL_BACKEND, weight=3)
    replaced = run_plan("replaced", current, [{"key": 1, "value": {"weight": 3}}], map_layout)[1][key(1)]
    assert replaced["weight"] == 3 and replaced["label"] == "" and replaced["verdict"] == "PASS"


def test_per_cpu_existing_entries_keep_their_counters_unless_reset():
    counters = layout(value_type="u64", cpus=4)
    current = {key(0): 1234}
    for state in ("merged", "replaced", "overridden"):
        result, after = run_plan(state, dict(current), [{"key": 0, "value": 0}, {"key": 1, "value": 7}], counters)
        assert after == {key(0): 1234, key(1): 7} and list(result.writes) == [key(1)]
    result, after = run_plan("merged", dict(current), [{"key": 0, "value": 0}], counters, reset_counters=True)
    assert after == {key(0): 0} and result.changed == 1
    assert run_plan("merged", dict(current), [{"key": 0, "value": 1234}], counters, reset_counters=True)[0].writes == {}


def test_per_cpu_bad_value_is_refused_even_where_it_would_not_be_written():
    with pytest.raises(maps.InputError, match=r"^entries\[0\].value: -1 is out of range"):
        run_plan("merged", {key(0): 5}, [{"key": 0, "value": -1}], layout(value_type="u64", cpus=2))


def test_arrays_treat_zero_as_absent():
    array = layout(value_type="u32", is_array=True)
    result, after = run_plan("merged", {key(1): 5}, entries({0: 0, 1: 0, 2: 3}), array)
    assert after == {key(2): 3} and set(result.writes) == {key(1), key(2)}
    assert (result.added, result.changed) == (1, 1)
    assert run_plan("deleted", {key(1): 5}, None, array)[0].removals == [key(1)]


def test_bad_entries_name_their_index():
    with pytest.raises(maps.InputError, match=r"^entries\[1\].key: '2' repeats the key of entries\[0\]$"):
        maps.encode_entries(entries({2: 1}) + [{"key": "2", "value": 1}], U32, "merged")
    with pytest.raises(maps.InputError, match=r"^entries\[0\].value: is required with state=replaced$"):
        maps.encode_entries([{"key": 1}], U32, "replaced")
    with pytest.raises(maps.InputError, match=r"^entries\[0\]: needs a key$"):
        maps.encode_entries([{"value": 1}], U32, "merged")


def test_diff_shows_only_changed_entries_one_line_each():
    before, after = {key(1): 10, key(2): 20}, {key(1): 10, key(2): 21, key(3): 30}
    assert maps.diff(before, after, U32) == {"before": "2: 20\n", "after": "2: 21\n3: 30\n"}


@pytest.mark.parametrize("name, interface, pin_dir, path", [
    ("/sys/fs/bpf/app/m", None, None, "/sys/fs/bpf/app/m"),
    ("deny_v4", "eth0", None, "/sys/fs/bpf/xdpfleet/eth0/deny_v4"),
    ("deny_v4", "eth0", "/sys/fs/bpf/other", "/sys/fs/bpf/other/deny_v4"),
])
def test_map_path(name, interface, pin_dir, path):
    assert maps.map_path(name, interface, pin_dir) == path


@pytest.mark.parametrize("name, message", [
    ("deny_v4", "map: 'deny_v4' is a name, so pin_dir or interface is needed to find it"),
    ("a/b", "map: 'a/b' is neither a map name nor an absolute path"),
])
def test_map_path_errors(name, message):
    with pytest.raises(maps.InputError) as failure:
        maps.map_path(name)
    assert str(failure.value) == message
