"""The controller side of xdp_program: clang compiles src once per (source, headers, flags, compiler)."""

import os
import shutil

import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.xdpfleet.xdp.plugins.action import xdp_program as action

SOURCE = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "verdict.h"
SEC("xdp") int xt_cached(struct xdp_md *ctx) { return VERDICT; }
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "prog.bpf.c").write_text(SOURCE)
    (tmp_path / "verdict.h").write_text("#define VERDICT XDP_PASS\n")
    return tmp_path


def test_compiles_once_and_caches_by_content(project):
    source = str(project / "prog.bpf.c")
    first = action.compile_source(source, [])
    assert os.path.dirname(first) == str(project / "home" / ".cache" / "xdpfleet")
    modified = os.stat(first).st_mtime_ns
    assert action.compile_source(source, []) == first and os.stat(first).st_mtime_ns == modified

    assert action.compile_source(source, ["-DUNUSED=1"]) != first
    (project / "verdict.h").write_text("#define VERDICT XDP_DROP\n")
    assert action.compile_source(source, []) != first, "a changed header must miss the cache"


def test_compiler_errors_are_reported(project):
    (project / "prog.bpf.c").write_text("int broken(")
    with pytest.raises(AnsibleActionFail, match="expected"):
        action.compile_source(str(project / "prog.bpf.c"), [])
    assert os.listdir(project / "home" / ".cache" / "xdpfleet") == []


def test_missing_clang_is_named(project, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert shutil.which("clang") is None
    with pytest.raises(AnsibleActionFail, match="clang was not found on the controller"):
        action.compile_source(str(project / "prog.bpf.c"), [])
