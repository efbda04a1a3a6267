"""The identity record xdpfleet binds to the programs it loads, and how maps are told apart, without a kernel."""

import struct

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _ownership as ownership


def test_meta_record_round_trip():
    digest = "ab" * 32
    value = ownership.encode_meta(digest, "xdpfleet_fw", "/sys/fs/bpf/xdpfleet/eth0", 3)
    assert ownership.decode_meta(value) == {"schema": ownership.META_SCHEMA, "object_sha256": digest,
                                            "program": "xdpfleet_fw", "pin_dir": "/sys/fs/bpf/xdpfleet/eth0",
                                            "map_schema_version": 3}


def test_a_record_from_before_map_schema_versions_reads_as_unversioned():
    """The field was a reserved zero; a record of the same format written then reads as version 0."""
    before = struct.pack(ownership.META_FORMAT, b"xdpfleet", 1, 0, bytes(32), b"xdpfleet_fw", b"/sys/fs/bpf/x")
    assert ownership.decode_meta(before)["map_schema_version"] == 0


@pytest.mark.parametrize("value", [None, b"", b"x" * 8, b"notxdpfl" + b"\0" * 400])
def test_anything_else_is_no_meta_record(value):
    assert ownership.decode_meta(value) is None


def test_internal_maps_are_told_apart():
    assert ownership.is_internal_map("xt_ports.rodata") and not ownership.is_internal_map("xt_ports")
