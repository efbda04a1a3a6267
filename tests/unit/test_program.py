"""xdp_program's decisions without Ansible: kernel checks, modes, ownership, program choice; and map_sizes,
run for real on a veth in a network namespace of the test's own.

Objects are compiled here and opened (not loaded) with libbpf, so no kernel state changes, except in the
map_sizes tests, whose namespace and private bpffs go away with them.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _object_load as loader
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _ownership as ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _program as program
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _program_state as program_state
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _restore as restore
from ansible_collections.xdpfleet.xdp.plugins.module_utils._hostfs import LOCK_DIR
from ansible_collections.xdpfleet.xdp.plugins.module_utils._libbpf import BpfObject
from tests.helpers.netns import in_namespace

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "integration" / "data"


def compiled(tmp_path, name, *flags):
    target = tmp_path / (name + ".o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", *flags,
                    "-c", str(DATA / (name + ".bpf.c")), "-o", str(target)], check=True)
    return str(target)


@pytest.mark.parametrize("release", ["4.19.0-27-amd64", "5.4.0", "5.9.16"])
def test_old_kernels_are_refused(release):
    with pytest.raises(loader.ProgramError, match="kernel %s is not supported" % release):
        program.check_kernel(release)


@pytest.mark.parametrize("release", ["5.10.0-30-amd64", "6.1.0", "6.18.2-xdp", "10.0"])
def test_recent_kernels_pass(release):
    program.check_kernel(release)


def test_a_missing_object_is_named(tmp_path):
    with pytest.raises(loader.ProgramError, match="cannot read BPF object"):
        loader.object_sha256({"object": str(tmp_path / "absent.o"), "compiler": "clang"})


@pytest.mark.parametrize("requested, attached, matches", [
    ("auto", "native", True), ("auto", "skb", True), ("auto", "hw", False),
    ("native", "native", True), ("native", "skb", False), ("hw", "hw", True),
])
def test_mode_matching(requested, attached, matches):
    assert program_state.mode_matches(requested, attached) is matches


def test_a_mode_switch_is_refused():
    described = dict(ownership.NOT_ATTACHED, attached=True, mode="skb")
    assert program._attach_mode(described, "auto") == "skb"
    with pytest.raises(loader.ProgramError, match="attached in skb mode; switching to native"):
        program._attach_mode(described, "native")
    assert program._attach_mode(dict(ownership.NOT_ATTACHED), "auto") == "auto"


def test_the_same_object_in_the_same_place_is_current():
    described = dict(ownership.NOT_ATTACHED, attached=True, owner="xdpfleet", object_sha256="aa", program="fw",
                     mode="native", pin_dir="/sys/fs/bpf/xdpfleet/eth0")
    assert program_state.is_current(described, "aa", None, "auto", "/sys/fs/bpf/xdpfleet/eth0", {})
    assert program_state.is_current(described, "aa", "fw", "native", "/sys/fs/bpf/xdpfleet/eth0", {})
    assert not program_state.is_current(described, "bb", None, "auto", "/sys/fs/bpf/xdpfleet/eth0", {})
    assert not program_state.is_current(described, "aa", "other", "auto", "/sys/fs/bpf/xdpfleet/eth0", {})
    assert not program_state.is_current(described, "aa", None, "skb", "/sys/fs/bpf/xdpfleet/eth0", {})
    assert not program_state.is_current(described, "aa", None, "auto", "/sys/fs/bpf/xdpfleet/eth1", {})
    assert not program_state.is_current(dict(described, owner="foreign"), "aa", None, "auto",
                                        "/sys/fs/bpf/xdpfleet/eth0", {})


def test_foreign_programs_need_force():
    described = dict(ownership.NOT_ATTACHED, attached=True, owner="foreign", prog_id=7, name="xdp_dispatcher")
    with pytest.raises(loader.ProgramError, match="did not attach \\(id 7, name xdp_dispatcher\\); set force"):
        program_state.check_owner(described, "eth0", False)
    program_state.check_owner(described, "eth0", True)


def test_layout_difference_names_each_field():
    declared = {"type": 1, "key_size": 2, "value_size": 1, "max_entries": 64, "map_flags": 0}
    existing = dict(declared, max_entries=16, value_size=8)
    assert loader._layout_difference(declared, existing) == "value_size 8 -> 1, max_entries 16 -> 64"
    assert loader._layout_difference(declared, declared) == ""


def test_program_choice(tmp_path):
    with BpfObject(compiled(tmp_path, "xt_ports")) as single:
        assert loader.select_program(single, None).name == "xt_filter"
    with BpfObject(compiled(tmp_path, "xt_two")) as two:
        with pytest.raises(loader.ProgramError, match="several XDP programs \\(xt_first, xt_second\\)"):
            loader.select_program(two, None)
        assert loader.select_program(two, "xt_second").name == "xt_second"
        with pytest.raises(loader.ProgramError, match="no XDP program named nope"):
            loader.select_program(two, "nope")
    with BpfObject(compiled(tmp_path, "xt_no_xdp")) as none:
        with pytest.raises(loader.ProgramError, match="has no XDP program"):
            loader.select_program(none, None)


# --- map_sizes, on a veth of the test's own network namespace (szt-<pid>) ------------------------

FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
INTERFACE = "szt0"


@pytest.fixture(scope="module")
def firewall():
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    return str(FIREWALL)


@pytest.fixture
def sized(tmp_path, firewall):
    """run(**params) of xdp_program on szt0, a veth in a namespace of this test with its pins in a private bpffs;
    the namespace (and with it the attached program) and the bpffs are removed afterwards."""
    namespace, bpffs = "szt-%d" % os.getpid(), tmp_path / "bpffs"
    bpffs.mkdir()
    lock_dir_existed = os.path.isdir(LOCK_DIR)
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "-n", namespace, "link", "add", INTERFACE, "type", "veth", "peer", "name", "szt1"],
                       check=True)
        subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)

        def run(check_mode=False, **params):
            params = dict(dict(interface=INTERFACE, state="attached", hook="exclusive", object=firewall,
                               remote_src=True, compiler="clang", cflags=[], program=None, mode="native",
                               pin_dir=str(bpffs / "pins"), object_sha256=None, force=False, map_migration="keep"),
                          **params)
            return in_namespace(namespace, program.run, params, check_mode)
        run.pin_dir, run.namespace = str(bpffs / "pins"), namespace
        yield run
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=True)
        if bpffs.is_mount():
            subprocess.run(["umount", str(bpffs)], check=True)
        _remove_lock(lock_dir_existed)


def _remove_lock(lock_dir_existed):
    """The host lock the runs left (they run in the root mount namespace), and its directory if they made it."""
    lock = os.path.join(LOCK_DIR, INTERFACE + ".lock")
    if os.path.exists(lock):
        os.unlink(lock)
    if not lock_dir_existed:
        try:
            os.rmdir(LOCK_DIR)
        except OSError:
            pass  # another run of this host holds a lock there now


def opened_map(result, name):
    """A descriptor of the map name of the program a run reported, opened by its id (closed after the with)."""
    return ownership.opened(libbpf.map_fd_by_id(next(item["id"] for item in result["maps"] if item["name"] == name)))


def max_entries(result, name):
    with opened_map(result, name) as fd:
        return libbpf.map_info(fd)["max_entries"]


def map_ids(result):
    return dict((item["name"], item["id"]) for item in result["maps"])


RULE_KEY, RULE_VALUE = b"\xc6\x12\x00\x01", b"\x07" * 68  # an entry of the hash map xf_s4h_0
SOURCE_KEY, SOURCE_BUCKET = b"\x01" * 24, b"\x02" * 16  # an entry of the LRU map xf_limits


def test_a_map_size_is_applied_and_a_second_run_changes_nothing(sized):
    first = sized(map_sizes={"xf_limits": 1000})
    assert first["changed"] and max_entries(first, "xf_limits") == 1000
    assert next(item for item in first["maps"] if item["name"] == "xf_limits")["max_entries"] == 1000
    assert first["diff"]["after"]["map_sizes"] == {"xf_limits": 1000}
    again = sized(map_sizes={"xf_limits": 1000})
    assert not again["changed"] and again["prog_id"] == first["prog_id"] and again["maps"] == first["maps"]

    predicted = sized(check_mode=True, map_sizes={"xf_limits": 2000})
    assert predicted["changed"] and predicted["diff"]["before"]["map_sizes"] == {"xf_limits": 1000}
    assert predicted["diff"]["after"]["map_sizes"] == {"xf_limits": 2000}
    assert predicted["prog_id"] == first["prog_id"] and max_entries(first, "xf_limits") == 1000


def test_a_changed_size_is_refused_under_keep_and_reset_empties_that_map_alone(sized):
    first = sized(map_sizes={"xf_limits": 1000})
    with opened_map(first, "xf_s4h_0") as rules, opened_map(first, "xf_limits") as limits:
        libbpf.map_update(rules, RULE_KEY, RULE_VALUE)
        libbpf.map_update(limits, SOURCE_KEY, SOURCE_BUCKET)

    with pytest.raises(loader.ProgramError) as refused:
        sized(map_sizes={"xf_limits": 2000})
    assert "the layout of map xf_limits changed (max_entries 1000 -> 2000)" in str(refused.value)
    assert "map_migration: reset" in str(refused.value)
    kept = sized(check_mode=True)  # an unnamed map is left as it is, so the program is still the one attached
    assert not kept["changed"] and kept["prog_id"] == first["prog_id"] and max_entries(first, "xf_limits") == 1000

    reset = sized(map_sizes={"xf_limits": 2000}, map_migration="reset")
    assert reset["changed"] and reset["prog_id"] != first["prog_id"] and max_entries(reset, "xf_limits") == 2000
    with opened_map(reset, "xf_s4h_0") as rules, opened_map(reset, "xf_limits") as limits:
        assert libbpf.map_lookup(rules, RULE_KEY, len(RULE_VALUE)) == RULE_VALUE
        assert libbpf.map_lookup(limits, SOURCE_KEY, len(SOURCE_BUCKET)) is None
    assert dict(map_ids(reset), xf_limits=None) == dict(map_ids(first), xf_limits=None)
    assert not sized(map_sizes={"xf_limits": 2000})["changed"]


@pytest.mark.parametrize("map_sizes, message", [
    ({"xf_nope": 10}, "map_sizes.xf_nope: the object has no map named xf_nope; name one of its maps (xf_scratch, "
                      "xf_config, xf_shadow_stats, xf_shadow_hits, xf_stats, xf_hits, xf_next, xf_passed, xf_limits,"),
    ({"xdp_fire.rodata": 2}, "map_sizes.xdp_fire.rodata: the object has no map named xdp_fire.rodata"),
    ({"xf_events": 4096}, "map_sizes.xf_events: map xf_events has type 27, whose size is not a number of entries "
                          "and cannot be set here (map_sizes sizes maps of type array, "),
    ({"xf_limits": 0}, "map_sizes.xf_limits: 0 is not a positive integer; give the map's number of entries "
                       "(1-4294967295)"),
    ({"xf_limits": -5}, "map_sizes.xf_limits: -5 is not a positive integer"),
    ({"xf_limits": "many"}, "map_sizes.xf_limits: 'many' is not a positive integer"),
    ({"xf_limits": True}, "map_sizes.xf_limits: True is not a positive integer"),
    ({"xf_limits": 2 ** 32}, "map_sizes.xf_limits: 4294967296 is not a positive integer"),
])
def test_bad_map_sizes_are_refused_before_anything_changes(sized, map_sizes, message):
    first = sized()
    for check_mode in (True, False):
        with pytest.raises(loader.ProgramError, match=re.escape(message)):
            sized(check_mode=check_mode, map_sizes=map_sizes)
    again = sized()
    assert not again["changed"] and again["maps"] == first["maps"]


def test_every_problem_of_map_sizes_is_named_at_once(sized):
    with pytest.raises(loader.ProgramError) as refused:
        sized(map_sizes={"xf_nope": 10, "xf_events": 4096})
    assert "map_sizes.xf_events: " in str(refused.value) and "map_sizes.xf_nope: " in str(refused.value)
    assert not os.path.exists(sized.pin_dir) and sized(check_mode=True)["diff"]["before"]["prog_id"] is None


def test_a_size_given_as_digits_is_taken():
    assert loader.requested_map_sizes({"xf_limits": "1000", "flows": 7}) == {"xf_limits": 1000, "flows": 7}
    assert loader.requested_map_sizes(None) == {}


def test_the_boot_time_restore_sizes_the_maps_as_recorded(sized, firewall):
    """The firewall role records map_sizes with the program; a restore (after a reboot: nothing attached) applies
    them, and a restore of the program still attached changes nothing."""
    record = {"interface": INTERFACE, "object": firewall, "mode": "native", "pin_dir": sized.pin_dir,
              "map_sizes": {"xf_limits": 1000}}
    restored = in_namespace(sized.namespace, restore.restore_program, record)
    assert restored["changed"] and max_entries(restored, "xf_limits") == 1000
    assert not in_namespace(sized.namespace, restore.restore_program, record)["changed"]


# bcc's Python bindings are the system interpreter's; the runs and the reads of their maps happen there.
BCC_RUNS = """
import json, os, sys
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf, _program
source, pin_dir = sys.argv[1], sys.argv[2]
base = dict(interface="szt0", state="attached", hook="exclusive", src=source, object=None, remote_src=True,
            compiler="bcc", cflags=[], program=None, mode="native", pin_dir=pin_dir, object_sha256=None, force=False,
            map_migration="keep")
port_key, listed = b"\\x00\\x35", b"\\x01"


def run(**params):
    try:
        result = _program.run(dict(base, **params), False)
    except _program.ProgramError as error:
        return {"refused": str(error)}
    ports = _libbpf.obj_get(os.path.join(pin_dir, "xt_ports"))
    try:
        kept = _libbpf.map_lookup(ports, port_key, 1) == listed
        _libbpf.map_update(ports, port_key, listed)
        size = _libbpf.map_info(ports)["max_entries"]
    finally:
        os.close(ports)
    return {"changed": result["changed"], "prog_id": result["prog_id"], "xt_ports": size, "entry_kept": kept}


print(json.dumps([run(map_sizes={"xt_ports": 64}), run(map_sizes={"xt_ports": 64}), run(map_sizes={"xt_ports": 32}),
                  run(map_sizes={"xt_ports": 32}, map_migration="reset"), run(map_sizes={"xt_nope": 4})]))
"""


def test_bcc_declares_the_maps_with_their_sizes(sized):
    done = subprocess.run(["nsenter", "--net=/run/netns/" + sized.namespace, "/usr/bin/python3", "-c", BCC_RUNS,
                           str(DATA / "xt_ports.bpf.c"), sized.pin_dir], capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(REPO / ".collections"), "PATH": os.environ["PATH"]}, timeout=300)
    assert done.returncode == 0, done.stderr
    sized_run, again, keep, reset, bad = json.loads(done.stdout)
    assert sized_run["changed"] and sized_run["xt_ports"] == 64
    assert again == dict(sized_run, changed=False, entry_kept=True)
    assert "the layout of map xt_ports changed (max_entries 64 -> 32)" in keep["refused"]
    assert reset["changed"] and reset["prog_id"] != sized_run["prog_id"] and reset["xt_ports"] == 32
    assert not reset["entry_kept"]
    assert bad == {"refused": "map_sizes.xt_nope: the object has no map named xt_nope; name one of its maps "
                              "(xt_ports, xt_seen)"}


@pytest.mark.parametrize("hook", ["exclusive", "chained"])
def test_dispatcher_settings_are_refused_with_the_other_hooks(hook):
    with pytest.raises(loader.ProgramError, match="^priority: these order the programs in libxdp's dispatcher and "
                                                  "apply to hook: dispatcher only, not hook: %s" % hook):
        program._dispatcher_settings({"hook": hook, "priority": 5, "chain_call_actions": None})
    assert program._dispatcher_settings({"hook": hook, "priority": None, "chain_call_actions": None}) == {}
    assert program._dispatcher_settings({"hook": "dispatcher", "priority": None, "chain_call_actions": ["drop"]}) == {
        "priority": 50, "chain_call_actions": ["drop"]}
