"""bpf_program's and bpf_events' decisions without the kernel: the kinds of programs, which of an object's are
attached, the refusals of kinds the kernel lacks, the decoding of records. Objects are compiled and opened (not
loaded) with libbpf."""

import errno
import subprocess
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _tracing as tracing
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _tracing_events as events
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _tracing_kinds as kinds
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _tracing_state as state
from ansible_collections.xdpfleet.xdp.plugins.module_utils._libbpf import BpfObject, LibbpfError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._maps import IntCodec, Member, StructCodec
from ansible_collections.xdpfleet.xdp.plugins.module_utils._object_load import ProgramError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "integration" / "data"


def compiled(tmp_path, name, *flags):
    target = tmp_path / (name + "".join(flags) + ".o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", *flags,
                    "-c", str(DATA / (name + ".bpf.c")), "-o", str(target)], check=True)
    return str(target)


@pytest.mark.parametrize("section, kind", [
    ("tracepoint/syscalls/sys_enter_write", "tracepoint"), ("tp/xdp/xdp_exception", "tracepoint"),
    ("raw_tp/xdp_exception", "raw_tp"), ("raw_tracepoint/kfree_skb", "raw_tp"), ("tp_btf/kfree_skb", "tp_btf"),
    ("fentry/vfs_write", "fentry"), ("fexit/vfs_write", "fexit"), ("kprobe/vfs_write", "kprobe"),
    ("kretprobe/vfs_write", "kretprobe"), ("xdp", None), ("xdp.frags", None), ("tc", None)])
def test_kinds_by_section(section, kind):
    assert kinds.kind_of(section) == kind


def test_every_tracing_program_is_selected_and_only_those(tmp_path):
    with BpfObject(compiled(tmp_path, "tr_getppid")) as bpf_object:
        assert [program.name for program in kinds.select(bpf_object, None)] == ["tr_btf", "tr_tracepoint"]
        assert [program.name for program in kinds.select(bpf_object, ["tr_btf"])] == ["tr_btf"]
        with pytest.raises(ProgramError, match="programs: nope is not a tracing program .* name one of "
                                               "tr_btf, tr_tracepoint"):
            kinds.select(bpf_object, ["tr_btf", "nope"])


def test_an_object_without_tracing_programs_is_refused():
    with BpfObject(str(REPO / "build" / "bpf" / "xdp_pass.o")) as bpf_object:
        with pytest.raises(ProgramError, match="has no tracing program"):
            kinds.select(bpf_object, None)


def test_kprobes_are_refused_without_the_kernel_feature_naming_the_alternative(tmp_path):
    with BpfObject(compiled(tmp_path, "tr_probes", "-DKPROBE")) as bpf_object:
        programs = kinds.select(bpf_object, None)
        with pytest.raises(ProgramError) as refused:
            kinds.check_kernel_features(programs, has_kprobes=False)
        kinds.check_kernel_features(programs, has_kprobes=True)
    message = str(refused.value)
    assert "no kprobes (built without CONFIG_KPROBES" in message
    assert "tr_write (section kprobe/vfs_write)" in message
    assert "use a tracepoint/ or tp_btf/ program" in message


def test_a_trampoline_load_refused_with_eperm_is_explained(tmp_path):
    with BpfObject(compiled(tmp_path, "tr_probes", "-DFENTRY")) as bpf_object:
        programs = kinds.select(bpf_object, None)
        reason = kinds.refusal(LibbpfError("loading failed", errno.EPERM), programs)
        assert kinds.refusal(LibbpfError("loading failed", errno.EINVAL), programs) is None
    assert reason.startswith("the kernel refuses programs that attach through a BPF trampoline (fentry/fexit: EPERM")
    assert "tr_write (section fentry/vfs_write)" in reason and "use a tracepoint/ or tp_btf/" in reason


def test_eperm_without_trampoline_programs_is_left_to_the_verifier_message(tmp_path):
    with BpfObject(compiled(tmp_path, "tr_getppid")) as bpf_object:
        assert kinds.refusal(LibbpfError("loading failed", errno.EPERM), kinds.select(bpf_object, None)) is None


def _program(name, sha256="a" * 64, pinned=True, maps=()):
    return {"name": name, "object_sha256": sha256, "link_pinned": pinned,
            "maps": [{"name": map_name, "id": number} for map_name, number in maps], "map_schema_version": 0}


def test_current_needs_the_same_programs_of_the_same_object_each_pinned(tmp_path):
    pin_dir = str(tmp_path)  # no map pins are needed when the programs have no maps
    running = [_program("a"), _program("b")]
    assert state.is_current(running, ["b", "a"], "a" * 64, pin_dir)
    assert not state.is_current(running, ["a"], "a" * 64, pin_dir)
    assert not state.is_current(running, ["a", "b"], "b" * 64, pin_dir)
    assert not state.is_current([_program("a"), _program("b", pinned=False)], ["a", "b"], "a" * 64, pin_dir)
    assert not state.is_current(running + [_program("b", pinned=False)], ["a", "b"], "a" * 64, pin_dir)


def test_programs_sharing_maps_carry_them_over_as_one_set(tmp_path):
    running = [_program("a", maps=[("counts", 7), ("pids", 8)]), _program("b", maps=[("counts", 7)])]
    loaded = state.as_loaded(running, str(tmp_path))
    assert [item["name"] for item in loaded["maps"]] == ["counts", "pids"]
    assert loaded["owner"] == "xdpfleet" and loaded["pin_dir"] == str(tmp_path)
    assert state.as_loaded([], str(tmp_path))["owner"] is None


def test_records_decode_as_the_struct_or_as_hex_when_short_or_untyped():
    codec = StructCodec(8, [Member("pid", 0, 0, IntCodec(4)), Member("calls", 32, 0, IntCodec(4))])
    record = (42).to_bytes(4, "little") + (3).to_bytes(4, "little")
    assert events.decode(record, codec) == {"pid": 42, "calls": 3}
    assert events.decode(record + b"\xff" * 8, codec) == {"pid": 42, "calls": 3}
    assert events.decode(record[:6], codec) == {"data": record[:6].hex()}
    assert events.decode(record, None) == {"data": record.hex()}


def test_map_names_the_kernel_would_cut_short_are_refused(tmp_path):
    source = tmp_path / "long.bpf.c"
    source.write_text(
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        "struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64);"
        " } a_map_name_of_17c SEC(\".maps\"), fifteen_chars_1 SEC(\".maps\");\n"
        "SEC(\"tp_btf/sys_enter\") int p(void *ctx) { return 0; }\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n")
    target = tmp_path / "long.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", str(source),
                    "-o", str(target)], check=True)
    with BpfObject(str(target)) as bpf_object:
        with pytest.raises(ProgramError, match=r"keeps the first 15 characters of a map's name, so maps "
                                               r"a_map_name_of_17c of .* shorten their names"):
            tracing.check_map_names(bpf_object)
