"""xdpfleet.xdp.xdp_map on the real kernel, run through ansible: locally on a private bpffs,
and over real SSH on a lab host. The kernel is read with libbpf before and after each run."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf

REPO = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).resolve().parent / "data" / "map_maps.bpf.c"
ANSIBLE = Path(sys.executable).parent / "ansible"
MODULE = REPO / "plugins" / "modules" / "xdp_map.py"
MAPS = ("backends", "stats", "prefixes", "raw_macs")
LAB_PIN_DIR = "/sys/fs/bpf/xdpmap-test"

WEB1 = {"label": "web1", "verdict": "VERDICT_DROP", "ports": {"low": 80, "high": 443},
        "mac": [2, 0, 0, 0, 0, 1], "weight": 9, "healthy": 1}
WEB2 = {"label": "web2", "verdict": "VERDICT_PASS", "ports": {"low": 8000, "high": 8080},
        "mac": [2, 0, 0, 0, 0, 2], "weight": 1, "healthy": 0}


@pytest.fixture(scope="module")
def object_file(tmp_path_factory):
    target = tmp_path_factory.mktemp("obj") / "map_maps.o"
    include = "-I/usr/include/%s-linux-gnu" % os.uname().machine
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", include, "-c", str(SOURCE), "-o", str(target)],
                   check=True)
    return str(target)


@pytest.fixture(scope="module")
def bpffs(tmp_path_factory):
    """A private bpffs instance, unmounted afterwards."""
    mountpoint = tmp_path_factory.mktemp("bpffs")
    subprocess.run(["mount", "-t", "bpf", "bpf", str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


class Loaded:
    """The test object loaded, its maps pinned in pin_dir."""

    def __init__(self, bpf_object, pin_dir):
        self.object, self.pin_dir = bpf_object, pin_dir

    def fd(self, name):
        return self.object.map(name).fd

    def raw(self, name):
        """Every (key, value) of the map as the kernel holds it, per-CPU slots included."""
        info = libbpf.map_info(self.fd(name))
        value_size = info["value_size"]
        if info["type"] in (5, 6, 10):
            value_size = libbpf.percpu_value_size(value_size) * libbpf.num_possible_cpus()
        return sorted(libbpf.map_items(self.fd(name), info["key_size"], value_size, info["max_entries"]))

    def count_packets(self, repeat):
        libbpf.prog_test_run(self.object.program("count_packets").fd, bytes(64), repeat=repeat)


@pytest.fixture
def loaded(object_file, bpffs, request):
    pin_dir = bpffs / request.node.name
    pin_dir.mkdir()
    with libbpf.BpfObject(object_file) as bpf_object:
        bpf_object.load()
        for name in MAPS:
            bpf_object.map(name).pin(str(pin_dir / name))
        yield Loaded(bpf_object, str(pin_dir))
    for name in MAPS:
        os.unlink(pin_dir / name)
    pin_dir.rmdir()


def ansible(pattern, args, *options, inventory="localhost,"):
    """Runs xdp_map once through `ansible`; returns the host's result (written by --tree, which leaves the
    diff out) with what ansible printed under "printed" (where --diff shows)."""
    with tempfile.TemporaryDirectory() as tree:
        command = [str(ANSIBLE), pattern, "-i", inventory, "-m", "xdpfleet.xdp.xdp_map", "-a", json.dumps(args),
                   "--tree", tree]
        if inventory == "localhost,":
            command += ["-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable]
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        done = subprocess.run(command + list(options), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode in (0, 2), done.stdout + done.stderr  # 2: the task failed, which tests assert on
        with open(os.path.join(tree, pattern)) as result:
            return dict(json.load(result), printed=done.stdout, failed=done.returncode == 2)


def through_ansible(loaded, *options, **args):
    return ansible("localhost", dict(args, pin_dir=loaded.pin_dir), *options)


def xdp_map(loaded, check_mode=False, **args):
    """Runs the module file itself, as ansible does on a host (in diff mode), but without the
    controller's seconds of start-up; through_ansible() and the lab test go end to end."""
    module_args = dict(args, pin_dir=loaded.pin_dir, _ansible_check_mode=check_mode, _ansible_diff=True)
    env = dict(os.environ, PYTHONPATH=str(REPO / ".collections"))
    done = subprocess.run([sys.executable, str(MODULE)], input=json.dumps({"ANSIBLE_MODULE_ARGS": module_args}),
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    return json.loads(done.stdout)


def diff_lines(result):
    """The +/- lines of the diff ansible printed."""
    lines = result["printed"].splitlines()
    return [line for line in lines if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]


def test_merged_check_mode_diff_and_rerun(loaded):
    entries = [{"key": 1, "value": WEB1}, {"key": 2, "value": WEB2}]

    checked = through_ansible(loaded, "--check", "--diff", map="backends", entries=entries)
    assert checked["changed"] and checked["summary"] == {"added": 2, "changed": 0, "removed": 0}
    assert loaded.raw("backends") == []
    assert diff_lines(checked) == ['+1: {"healthy": 1, "label": "web1", "mac": [2, 0, 0, 0, 0, 1], '
                                   '"ports": {"high": 443, "low": 80}, "verdict": "VERDICT_DROP", "weight": 9}',
                                   '+2: {"healthy": 0, "label": "web2", "mac": [2, 0, 0, 0, 0, 2], '
                                   '"ports": {"high": 8080, "low": 8000}, "verdict": "VERDICT_PASS", "weight": 1}']

    first = xdp_map(loaded, map="backends", entries=entries)
    assert first["changed"] and first["before"] == [] and first["after"] == entries
    assert first["diff"]["before"] == "" and ["+" + line for line in first["diff"]["after"].splitlines()] == \
        diff_lines(checked)
    written = loaded.raw("backends")
    assert len(written) == 2

    second = xdp_map(loaded, map="backends", entries=entries)
    assert not second["changed"] and "after" not in second and "diff" not in second
    assert loaded.raw("backends") == written
    assert xdp_map(loaded, map="backends", state="gathered")["gathered"] == entries


def test_merged_sets_named_fields_replaced_zeroes_the_rest(loaded):
    xdp_map(loaded, map="backends", entries=[{"key": 1, "value": WEB1}])
    merged = [{"key": 1, "value": {"weight": 3, "ports": {"high": 444}}}]
    expected = dict(WEB1, weight=3, ports={"low": 80, "high": 444})
    assert xdp_map(loaded, map="backends", entries=merged)["after"] == [{"key": 1, "value": expected}]
    assert not xdp_map(loaded, map="backends", entries=merged)["changed"]

    replaced = [{"key": 1, "value": {"label": "only"}}]
    after = xdp_map(loaded, map="backends", state="replaced", entries=replaced)
    assert after["changed"] and after["summary"] == {"added": 0, "changed": 1, "removed": 0}
    assert after["after"][0]["value"] == {"label": "only", "verdict": "VERDICT_PASS", "ports": {"low": 0, "high": 0},
                                          "mac": [0] * 6, "weight": 0, "healthy": 0}
    assert not xdp_map(loaded, map="backends", state="replaced", entries=replaced)["changed"]


def test_overridden_removes_extras_and_deleted_removes_keys(loaded):
    trie = dict(map="prefixes", key_type="cidr4", value_type="u32")
    xdp_map(loaded, entries=[{"key": "198.18.0.0/24", "value": 1}, {"key": "198.19.0.0/16", "value": 2}], **trie)
    wanted = [{"key": "198.18.0.0/24", "value": 1}, {"key": "198.18.128.0/17", "value": 3}]
    before = loaded.raw("prefixes")

    checked = xdp_map(loaded, check_mode=True, state="overridden", entries=wanted, **trie)
    assert checked["changed"] and checked["summary"] == {"added": 1, "changed": 0, "removed": 1}
    assert loaded.raw("prefixes") == before and len(before) == 2
    overridden = xdp_map(loaded, state="overridden", entries=wanted, **trie)
    assert overridden["changed"] and overridden["after"] == checked["after"]
    assert not xdp_map(loaded, state="overridden", entries=wanted, **trie)["changed"]
    # sorted by key bytes, which start with the prefix length
    assert xdp_map(loaded, state="gathered", **trie)["gathered"] == [wanted[1], wanted[0]]
    as_btf_says = xdp_map(loaded, map="prefixes", state="gathered")["gathered"]
    assert as_btf_says[0] == {"key": {"prefixlen": 17, "address": [198, 18, 128, 0]}, "value": 3}

    deleted = xdp_map(loaded, state="deleted", entries=[{"key": "198.18.128.0/17"}], **trie)
    assert deleted["changed"] and deleted["after"] == wanted[:1]
    assert not xdp_map(loaded, state="deleted", entries=[{"key": "198.18.128.0/17"}], **trie)["changed"]
    assert xdp_map(loaded, state="deleted", **trie)["changed"] and loaded.raw("prefixes") == []


def test_counters_survive_a_merged_update_and_reset_on_request(loaded):
    loaded.count_packets(repeat=100)
    counted = loaded.raw("stats")[0]
    entries = [{"key": 0, "value": {"packets": 0, "bytes": 0}}, {"key": 2, "value": {"packets": 5}}]

    merged = xdp_map(loaded, map="stats", entries=entries)
    assert merged["changed"] and merged["summary"] == {"added": 1, "changed": 0, "removed": 0}
    assert loaded.raw("stats")[0] == counted
    assert not xdp_map(loaded, map="stats", entries=entries)["changed"]

    cpus = libbpf.num_possible_cpus()
    gathered = xdp_map(loaded, map="stats", state="gathered", per_cpu=True)["gathered"]
    assert gathered[0]["value"] == {"packets": 100, "bytes": 6400}
    assert gathered[1] == {"key": 2, "value": {"packets": 5, "bytes": 0},
                           "per_cpu": [{"packets": 5, "bytes": 0}] + [{"packets": 0, "bytes": 0}] * (cpus - 1)}
    assert len(gathered[0]["per_cpu"]) == cpus and sum(slot["packets"] for slot in gathered[0]["per_cpu"]) == 100

    reset = xdp_map(loaded, map="stats", entries=entries[:1], reset_counters=True)
    assert reset["changed"] and reset["summary"] == {"added": 0, "changed": 1, "removed": 0}
    assert [entry["key"] for entry in xdp_map(loaded, map="stats", state="gathered")["gathered"]] == [2]


def test_a_full_map_is_refused_and_left_as_it_was(loaded):
    trie = dict(map="prefixes", key_type="cidr4")
    xdp_map(loaded, entries=[{"key": "198.18.%d.0/24" % index, "value": "0x01000000"} for index in range(3)],
            value_type="hex", **trie)
    before = loaded.raw("prefixes")
    too_many = [{"key": "198.19.%d.0/24" % index, "value": 1} for index in range(2)]
    failed = xdp_map(loaded, entries=too_many, value_type="u32", **trie)
    assert failed["failed"]
    assert failed["msg"] == ("map prefixes (%s/prefixes) is full: it holds at most 4 entries (max_entries) and "
                             "would need 5; nothing was changed" % loaded.pin_dir)
    assert loaded.raw("prefixes") == before
    replaced_all = xdp_map(loaded, state="overridden", entries=too_many, value_type="u32", **trie)
    assert replaced_all["changed"] and len(loaded.raw("prefixes")) == 2


def test_a_kernel_refusal_mid_write_puts_back_what_was_touched(loaded):
    """Raw keys get past the codecs: the kernel refuses prefix length 33 after the old entries are
    deleted and a valid new one is written; both are undone."""
    xdp_map(loaded, map="prefixes", key_type="cidr4", value_type="u32",
            entries=[{"key": "198.18.0.0/24", "value": 1}, {"key": "198.19.0.0/16", "value": 2}])
    before = loaded.raw("prefixes")
    raw_keys = [{"key": "18000000c6120100", "value": "03000000"}, {"key": "21000000c6120200", "value": "04000000"}]
    failed = xdp_map(loaded, map="prefixes", key_type="hex", value_type="hex", state="overridden", entries=raw_keys)
    assert failed["failed"] and failed["msg"].startswith(
        "writing map prefixes (%s/prefixes) failed, the entries it touched were put back: " % loaded.pin_dir)
    assert "Invalid argument" in failed["msg"]
    assert loaded.raw("prefixes") == before


def test_bad_input_names_the_field_and_changes_nothing(loaded):
    xdp_map(loaded, map="raw_macs", key_type="mac", value_type="u32",
            entries=[{"key": "02:00:00:00:00:01", "value": 1}])
    before = loaded.raw("raw_macs")
    entries = [{"key": "02:00:00:00:00:02", "value": 2}, {"key": "02:00:00:00:00:03", "value": 3},
               {"key": "02:00:00:00:00:0g", "value": 4}]
    failed = xdp_map(loaded, map="raw_macs", key_type="mac", value_type="u32", entries=entries)
    assert failed["failed"] and failed["msg"] == "entries[2].key: '02:00:00:00:00:0g' is not a MAC address"
    assert loaded.raw("raw_macs") == before
    untyped = xdp_map(loaded, map="raw_macs", state="gathered")
    assert untyped["gathered"] == [{"key": "020000000001", "value": "01000000"}]
    assert untyped["map"]["btf"] is False and untyped["map"]["type"] == "hash"
    missing = xdp_map(loaded, map="absent", state="gathered")
    assert missing["msg"] == "no pinned map at %s/absent (is the program that owns it loaded and pinned?)" % (
        loaded.pin_dir)


def test_merged_over_ssh_on_a_lab_host(lab, object_file):
    """The module on a lab host over real SSH, the map pinned in that host's own bpffs."""
    host = lab.hosts[0]
    with libbpf.BpfObject(object_file) as bpf_object:
        bpf_object.load()
        map_id = libbpf.map_info(bpf_object.map("backends").fd)["id"]
        assert host.run("mkdir -p %s && bpftool map pin id %d %s/backends" % (LAB_PIN_DIR, map_id, LAB_PIN_DIR)).rc == 0
        try:
            args = dict(map="%s/backends" % LAB_PIN_DIR, entries=[{"key": 7, "value": WEB1}])
            first = ansible(host.name, args, inventory=str(lab.inventory))
            second = ansible(host.name, args, inventory=str(lab.inventory))
            stored = libbpf.map_items(bpf_object.map("backends").fd, 4, 28, 16)
        finally:
            host.run("rm -rf %s" % LAB_PIN_DIR)
    assert first["changed"] and first["after"] == [{"key": 7, "value": WEB1}]
    assert not second["changed"] and second["before"] == first["after"]
    assert [item[0] for item in stored] == [(7).to_bytes(4, sys.byteorder)]
