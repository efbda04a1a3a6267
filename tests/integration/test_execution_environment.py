"""The execution environment: `ansible-builder create` on execution-environment.yml gives a build context that
holds the collection, and what the image build will install from it is what the controller needs: clang and
the headers the firewall compiles against (bindep.txt, found through meta/execution-environment.yml as
ansible-builder's own introspection finds it), ansible-core at the version the tests run, ansible-runner."""

import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.lab.layout import REPO

VENV_BIN = Path(sys.executable).parent
# The controller compiles bpf/*.bpf.c: clang, <bpf/bpf_helpers.h>, <linux/bpf.h> and <asm/...>; ssh to the hosts.
CONTROLLER_PACKAGES = {"dpkg": {"clang", "libbpf-dev", "linux-libc-dev", "openssh-client"},
                       "rpm": {"clang", "libbpf-devel", "kernel-headers", "openssh-clients"}}


def pinned(requirements, name):
    return next(line.split("==")[1] for line in requirements.read_text().splitlines() if line.startswith(name + "=="))


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """The build context ansible-builder creates from a copy of the definition, beside a freshly built tarball."""
    work = tmp_path_factory.mktemp("ee")
    shutil.copy(REPO / "execution-environment.yml", work)
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work / "build/ee"),
                    str(REPO)], capture_output=True, text=True, timeout=300, check=True)
    done = subprocess.run([str(VENV_BIN / "ansible-builder"), "create", "-f", "execution-environment.yml",
                           "-c", "context", "--output-filename", "Containerfile"],
                          cwd=work, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return work / "context"


def bindep_packages(text, platform):
    """Package names of a bindep file that apply on a platform (dpkg or rpm)."""
    names = set()
    for line in text.splitlines():
        match = re.match(r"\s*([\w.+-]+)\s*(?:\[([^\]]*)\])?", line.split("#")[0])
        if match and (not match.group(2) or "platform:%s" % platform in match.group(2).split()):
            names.add(match.group(1))
    return names


def test_the_context_installs_the_collection_and_the_pinned_ansible(context):
    galaxy_version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    (tarball,) = (context / "_build" / "xdpfleet").glob("*.tar.gz")
    assert tarball.name == "xdpfleet-xdp-%s.tar.gz" % galaxy_version, \
        "execution-environment.yml names another version than galaxy.yml's"
    assert requirements["collections"] == [{"name": "xdpfleet/" + tarball.name, "type": "file"}]
    containerfile = (context / "Containerfile").read_text()
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="([^"]*)"', containerfile, re.M).group(1).split()
    assert "ansible-core==%s" % pinned(REPO / "requirements.txt", "ansible-core") in refs
    assert [ref for ref in refs if ref.startswith("ansible-runner==")], refs
    assert "introspect.py introspect" in containerfile


def test_introspection_of_the_built_collection_finds_what_the_controller_needs(context, tmp_path):
    """What the builder stage runs on /usr/share/ansible/collections, run here on the tarball in the context."""
    (tarball,) = (context / "_build" / "xdpfleet").glob("*.tar.gz")
    installed = tmp_path / "ansible_collections" / "xdpfleet" / "xdp"
    installed.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(installed, filter="data")
    done = subprocess.run([sys.executable, str(context / "_build" / "scripts" / "introspect.py"), "introspect",
                           "--write-bindep", str(tmp_path / "bindep.txt"), "--write-pip", str(tmp_path / "pip.txt"),
                           str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    found = (tmp_path / "bindep.txt").read_text()
    assert "# from collection xdpfleet.xdp" in found
    for platform, needed in CONTROLLER_PACKAGES.items():
        assert sorted(needed - bindep_packages(found, platform)) == [], platform
    # the controller side needs no Python package beyond ansible-core
    assert not (tmp_path / "pip.txt").exists() or not (tmp_path / "pip.txt").read_text().strip()


def test_meta_definition_is_valid_for_ansible_builder():
    from ansible_builder.ee_schema import validate_schema

    for definition in (REPO / "meta" / "execution-environment.yml", REPO / "execution-environment.yml"):
        validate_schema(yaml.safe_load(definition.read_text()))
