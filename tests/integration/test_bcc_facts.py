"""The bcc backend (xdp_program compiler: bcc): the facts and drop-counter tests of test_xdp_facts run again
against a firewall that bcc compiled on the host, plus what is particular to bcc (one source, clear errors)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _bcc, _fw_shadow, _hook, _layout, _libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _object_load
from tests.integration import test_xdp_facts as clang_suite
from tests.integration.test_xdp_facts import RULES, SETS, ansible, succeeded

# pytest collects fixtures and tests by module attribute: these run again here, on the bcc-compiled firewall.
fleet = clang_suite.fleet
test_drop_sampler_returns_the_packets_sent = clang_suite.test_drop_sampler_returns_the_packets_sent
test_exactly_n_dropped_pings_show_as_n_drops_and_n_rule_hits = \
    clang_suite.test_exactly_n_dropped_pings_show_as_n_drops_and_n_rule_hits
test_facts_describe_the_attached_firewall = clang_suite.test_facts_describe_the_attached_firewall
test_packets_on_every_cpu_are_counted = clang_suite.test_packets_on_every_cpu_are_counted

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "bpf" / "xdp_firewall.bpf.c"
CLANG_OBJECT = REPO / "build" / "bpf" / "xdp_firewall.o"


def bcc_sha256():
    return _bcc.source_sha256(str(SOURCE), [])


@pytest.fixture(scope="module")
def firewall_host(fleet):  # replaces the clang-loaded host of test_xdp_facts
    host = fleet.hosts[0]
    attached = succeeded(ansible(host.name, "xdpfleet.xdp.xdp_program",
                                 {"interface": "eth0", "src": str(SOURCE), "compiler": "bcc"}))
    assert attached["changed"] and attached["object_sha256"] == bcc_sha256()
    succeeded(ansible(host.name, "xdpfleet.xdp.xdp_rules",
                      {"interface": "eth0", "config": RULES, "sets": SETS, "state": "overridden", "sampling": 1}))
    return host


NOT_IN_BCC = _fw_shadow.SHADOW_MAPS + (_hook.NEXT_SLOT_MAP,)  # see _bcc.NOT_FOR_BCC


def test_bcc_maps_have_the_names_and_layouts_of_the_clang_object_but_the_shadow_maps_and_the_slot(firewall_host):
    described = succeeded(ansible(firewall_host.name, "xdpfleet.xdp.xdp_program",
                                  {"interface": "eth0", "src": str(SOURCE), "compiler": "bcc"}))
    assert described["changed"] is False
    with _libbpf.BpfObject(str(CLANG_OBJECT)) as clang_object:
        declared = dict((m.name, m.definition()) for m in clang_object.maps if not m.is_internal)
    loaded = dict((m["name"], dict((k, m[k]) for k in ("type", "key_size", "value_size", "max_entries", "map_flags")))
                  for m in described["maps"])
    assert set(NOT_IN_BCC) <= set(declared)
    assert loaded == dict((name, definition) for name, definition in declared.items() if name not in NOT_IN_BCC)


def test_a_shadow_set_on_the_bcc_build_is_refused_by_name(firewall_host):
    refused = ansible(firewall_host.name, "xdpfleet.xdp.xdp_rules",
                      {"interface": "eth0", "mode": "shadow", "config": RULES, "sets": SETS, "state": "overridden"})
    assert refused.get("failed") and "has no xf_shadow_stats or xf_shadow_hits" in refused["msg"], refused
    assert "compiler: clang" in refused["msg"]


def test_translation_covers_every_map_but_the_shadow_maps_and_the_slot_and_leaves_no_btf_definition():
    text, maps, programs = _bcc.translate(_bcc.bundle(str(SOURCE)))
    with _libbpf.BpfObject(str(CLANG_OBJECT)) as clang_object:
        assert sorted(maps) == sorted(m.name for m in clang_object.maps
                                      if not m.is_internal and m.name not in NOT_IN_BCC)
    assert "shadow(" not in text and "tail_call" not in text
    assert programs == ["xdpfleet_fw"]
    assert 'SEC(".maps")' not in text and "__uint(" not in text and "bpf_map_lookup_elem(&" not in text


@pytest.mark.parametrize("cflags, version", [
    ([], _layout.XF_SCHEMA_VERSION), (["-DXF_SCHEMA_VERSION=7"], 7), (["-D", "XF_SCHEMA_VERSION=8"], 8),
])
def test_bcc_reads_the_map_schema_version_the_clang_object_declares(tmp_path, cflags, version):
    clang_object = str(tmp_path / "firewall.o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/%s-linux-gnu" % os.uname().machine,
                    "-I", str(SOURCE.parent)] + cflags + ["-c", str(SOURCE), "-o", clang_object], check=True)
    with _libbpf.BpfObject(clang_object) as compiled:
        assert _object_load.declared_schema_version(compiled) == version
    with _bcc.BccObject(str(SOURCE), cflags, lambda name: None) as translated:  # translated, not compiled
        assert _object_load.declared_schema_version(translated) == version


def test_a_map_used_in_an_unsupported_way_is_named(tmp_path):
    source = tmp_path / "odd.bpf.c"
    (tmp_path / "xdp_firewall.h").write_text((REPO / "bpf" / "xdp_firewall.h").read_text())
    source.write_text(SOURCE.read_text().replace("count(&xf_stats, reason, bytes);",
                                                 "bpf_map_update_elem(&xf_stats, &reason, &bytes, 0);"))
    with pytest.raises(_bcc.BccError, match="map xf_stats is used in a way the bcc translation does not support"):
        _bcc.translate(_bcc.bundle(str(source)))


def test_missing_headers_and_bcc_are_said_clearly(tmp_path, monkeypatch):
    with pytest.raises(_bcc.BccError, match=r"needs the headers of kernel 9\.9\.9-x.*linux-headers-9\.9\.9-x.*BCC\.md"):
        _bcc.check_kernel_headers("9.9.9-x", str(tmp_path), environ={})
    monkeypatch.setitem(sys.modules, "bcc", None)
    with pytest.raises(_bcc.BccError, match="python3-bpfcc.*python3-bcc"):
        _bcc.bcc_module()


def test_the_running_kernel_has_headers_for_bcc():
    _bcc.check_kernel_headers(os.uname().release)
