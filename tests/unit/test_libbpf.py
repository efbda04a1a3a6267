"""The libbpf ctypes layer against the running kernel: real loads, maps and test runs."""

import os
import struct
import subprocess

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _ownership as ownership

DATA = os.path.join(os.path.dirname(__file__), "data")
XDP_PASS = 2


def compile_object(tmp_path, name):
    source, target = os.path.join(DATA, name + ".bpf.c"), str(tmp_path / (name + ".o"))
    include = "-I/usr/include/%s-linux-gnu" % os.uname().machine
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", include, "-c", source, "-o", target], check=True)
    return target


@pytest.fixture
def counter(tmp_path):
    with libbpf.BpfObject(compile_object(tmp_path, "counter")) as bpf_object:
        bpf_object.load()
        yield bpf_object


def prefix_key(prefixlen, address):
    return struct.pack("<I4B", prefixlen, *address)


def test_open_lists_programs_and_declared_maps(tmp_path):
    with libbpf.BpfObject(compile_object(tmp_path, "counter")) as bpf_object:
        assert [(p.name, p.section, p.is_xdp) for p in bpf_object.programs] == [("count_and_pass", "xdp", True)]
        declared = {m.name: m.definition() for m in bpf_object.maps}
    assert declared["packets"] == {"type": 6, "key_size": 4, "value_size": 8, "max_entries": 4, "map_flags": 0}
    assert declared["prefixes"]["type"] == 11


def test_test_run_counts_on_every_possible_cpu_slot(counter):
    program_fd = counter.program("count_and_pass").fd
    retval, duration, packet = libbpf.prog_test_run(program_fd, bytes(64), repeat=1000)
    assert retval == XDP_PASS and duration > 0
    cpus = libbpf.num_possible_cpus()
    per_cpu_size = libbpf.percpu_value_size(8) * cpus
    [(key, value)] = [item for item in libbpf.map_items(counter.map("packets").fd, 4, per_cpu_size, 4)
                      if item[0] == bytes(4)]
    assert sum(struct.unpack("<%dQ" % cpus, value)) == 1000


def test_prog_and_map_info_come_from_the_kernel(counter):
    info = libbpf.prog_info(counter.program("count_and_pass").fd)
    assert info["name"] == "count_and_pass" and len(info["tag"]) == 16
    map_names = {libbpf.map_info(counter.map(name).fd)["id"]: name for name in ("packets", "prefixes")}
    assert set(info["map_ids"]) == {next(i for i, n in map_names.items() if n == "packets")}
    with ownership.opened(libbpf.prog_fd_by_id(info["id"])) as fd:
        assert libbpf.prog_info(fd)["tag"] == info["tag"]


def test_batch_update_delete_and_dump_of_a_trie(counter):
    trie = counter.map("prefixes").fd
    keys = [prefix_key(32, (198, 18, 1, host)) for host in range(200)]
    libbpf.map_update_batch(trie, keys, [struct.pack("<I", index) for index in range(200)])
    assert sorted(libbpf.map_keys(trie, 8)) == sorted(keys)
    libbpf.map_delete_batch(trie, keys[:50])
    items = dict(libbpf.map_items(trie, 8, 4, 1024))
    assert sorted(items) == sorted(keys[50:])
    assert items[keys[60]] == struct.pack("<I", 60)


def test_element_operations_and_their_errors(counter):
    trie = counter.map("prefixes").fd
    key = prefix_key(24, (198, 18, 2, 0))
    assert libbpf.map_lookup(trie, key, 4) is None
    libbpf.map_update(trie, key, struct.pack("<I", 7), libbpf.BPF_NOEXIST)
    with pytest.raises(libbpf.LibbpfError) as failure:
        libbpf.map_update(trie, key, struct.pack("<I", 8), libbpf.BPF_NOEXIST)
    assert failure.value.errno == 17 and "File exists" in str(failure.value)
    assert libbpf.map_delete(trie, key) is True
    assert libbpf.map_delete(trie, key) is False


@pytest.fixture
def bpffs(tmp_path):
    """A private bpffs instance, so the test touches no pins but its own."""
    mountpoint = tmp_path / "bpffs"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_pin_and_reopen_by_path(counter, bpffs):
    pin = str(bpffs / "packets")
    counter.map("packets").pin(pin)
    fd = libbpf.obj_get(pin)
    assert libbpf.map_info(fd)["name"] == "packets"
    os.close(fd)


def test_pin_outside_bpffs_is_refused(counter, tmp_path):
    with pytest.raises(libbpf.LibbpfError) as failure:
        counter.map("packets").pin(str(tmp_path / "packets"))
    assert failure.value.errno == 22


def test_bound_map_shows_in_program_map_ids(counter):
    program_fd = counter.program("count_and_pass").fd
    meta = libbpf.map_create(2, "xdpfleet_test", 4, 8, 1)
    try:
        libbpf.prog_bind_map(program_fd, meta)
        assert libbpf.map_info(meta)["id"] in libbpf.prog_info(program_fd)["map_ids"]
    finally:
        os.close(meta)


def test_verifier_rejection_carries_the_log(tmp_path):
    with libbpf.BpfObject(compile_object(tmp_path, "rejected")) as bpf_object:
        with pytest.raises(libbpf.LibbpfError) as failure:
            bpf_object.load()
    assert failure.value.errno == 13
    assert "invalid access to packet" in failure.value.log


def test_missing_object_file_is_a_clear_error(tmp_path):
    with pytest.raises(libbpf.LibbpfError) as failure:
        libbpf.BpfObject(str(tmp_path / "absent.o"))
    assert "absent.o" in str(failure.value) and failure.value.errno == 2


READ_ONLY_GLOBALS = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
const volatile __u64 first = 0x1122334455;
const volatile __u32 xdpfleet_schema_version = 7;
const volatile __u8 last = 9;
SEC("xdp")
int pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}
"""


def test_read_only_constants_are_read_where_btf_places_them_before_load(tmp_path):
    source = tmp_path / "globals.bpf.c"
    source.write_text(READ_ONLY_GLOBALS)
    target = str(tmp_path / "globals.o")
    include = "-I/usr/include/%s-linux-gnu" % os.uname().machine
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", include, "-c", str(source), "-o", target], check=True)
    with libbpf.BpfObject(target) as bpf_object:
        assert bpf_object.read_only_constant("xdpfleet_schema_version") == 7
        assert bpf_object.read_only_constant("first") == 0x1122334455
        assert bpf_object.read_only_constant("last") == 9
        assert bpf_object.read_only_constant("absent") is None
    with libbpf.BpfObject(compile_object(tmp_path, "counter")) as without_globals:
        assert without_globals.read_only_constant("xdpfleet_schema_version") is None
