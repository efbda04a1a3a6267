"""xdp_program's decisions without Ansible: kernel checks, modes, ownership, program choice.

Objects are compiled here and opened (not loaded) with libbpf, so no kernel state changes.
"""

import subprocess
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _ownership as ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _program as program
from ansible_collections.xdpfleet.xdp.plugins.module_utils._libbpf import BpfObject

DATA = Path(__file__).resolve().parents[1] / "integration" / "data"


def compiled(tmp_path, name, *flags):
    target = tmp_path / (name + ".o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", *flags,
                    "-c", str(DATA / (name + ".bpf.c")), "-o", str(target)], check=True)
    return str(target)


@pytest.mark.parametrize("release", ["4.19.0-27-amd64", "5.4.0", "5.9.16"])
def test_old_kernels_are_refused(release):
    with pytest.raises(program.ProgramError, match="kernel %s is not supported" % release):
        program.check_kernel(release)


@pytest.mark.parametrize("release", ["5.10.0-30-amd64", "6.1.0", "6.18.2-xdp", "10.0"])
def test_recent_kernels_pass(release):
    program.check_kernel(release)


def test_a_missing_object_is_named(tmp_path):
    with pytest.raises(program.ProgramError, match="cannot read BPF object"):
        program._object_sha256({"object": str(tmp_path / "absent.o"), "compiler": "clang"})


@pytest.mark.parametrize("requested, attached, matches", [
    ("auto", "native", True), ("auto", "skb", True), ("auto", "hw", False),
    ("native", "native", True), ("native", "skb", False), ("hw", "hw", True),
])
def test_mode_matching(requested, attached, matches):
    assert program._mode_matches(requested, attached) is matches


def test_a_mode_switch_is_refused():
    described = dict(ownership.NOT_ATTACHED, attached=True, mode="skb")
    assert program._attach_mode(described, "auto") == "skb"
    with pytest.raises(program.ProgramError, match="attached in skb mode; switching to native"):
        program._attach_mode(described, "native")
    assert program._attach_mode(dict(ownership.NOT_ATTACHED), "auto") == "auto"


def test_the_same_object_in_the_same_place_is_current():
    described = dict(ownership.NOT_ATTACHED, attached=True, owner="xdpfleet", object_sha256="aa", program="fw",
                     mode="native", pin_dir="/sys/fs/bpf/xdpfleet/eth0")
    assert program._is_current(described, "aa", None, "auto", "/sys/fs/bpf/xdpfleet/eth0")
    assert program._is_current(described, "aa", "fw", "native", "/sys/fs/bpf/xdpfleet/eth0")
    assert not program._is_current(described, "bb", None, "auto", "/sys/fs/bpf/xdpfleet/eth0")
    assert not program._is_current(described, "aa", "other", "auto", "/sys/fs/bpf/xdpfleet/eth0")
    assert not program._is_current(described, "aa", None, "skb", "/sys/fs/bpf/xdpfleet/eth0")
    assert not program._is_current(described, "aa", None, "auto", "/sys/fs/bpf/xdpfleet/eth1")
    assert not program._is_current(dict(described, owner="foreign"), "aa", None, "auto", "/sys/fs/bpf/xdpfleet/eth0")


def test_foreign_programs_need_force():
    described = dict(ownership.NOT_ATTACHED, attached=True, owner="foreign", prog_id=7, name="xdp_dispatcher")
    with pytest.raises(program.ProgramError, match="did not attach \\(id 7, name xdp_dispatcher\\); set force"):
        program._check_owner(described, "eth0", False)
    program._check_owner(described, "eth0", True)


def test_layout_difference_names_each_field():
    declared = {"type": 1, "key_size": 2, "value_size": 1, "max_entries": 64, "map_flags": 0}
    existing = dict(declared, max_entries=16, value_size=8)
    assert program._layout_difference(declared, existing) == "value_size 8 -> 1, max_entries 16 -> 64"
    assert program._layout_difference(declared, declared) == ""


def test_program_choice(tmp_path):
    with BpfObject(compiled(tmp_path, "xt_ports")) as single:
        assert program.select_program(single, None).name == "xt_filter"
    with BpfObject(compiled(tmp_path, "xt_two")) as two:
        with pytest.raises(program.ProgramError, match="several XDP programs \\(xt_first, xt_second\\)"):
            program.select_program(two, None)
        assert program.select_program(two, "xt_second").name == "xt_second"
        with pytest.raises(program.ProgramError, match="no XDP program named nope"):
            program.select_program(two, "nope")
    with BpfObject(compiled(tmp_path, "xt_no_xdp")) as none:
        with pytest.raises(program.ProgramError, match="has no XDP program"):
            program.select_program(none, None)
