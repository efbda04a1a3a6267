"""The host's filesystem side: bpffs detection, pin directories, the host lock, atomic writes, digests."""

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs as hostfs
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError

COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".collections")


FILESYSTEM_OF_HIDDEN_MOUNT = """
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs as hostfs
top = sys.argv[2]
pins = os.path.join(top, "fs", "bpf")
os.makedirs(pins)
subprocess.run(["mount", "-t", "bpf", "bpf", pins], check=True)
print(hostfs.filesystem_of(os.path.join(pins, "xdpfleet", "eth0")))
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", top], check=True)  # hides the bpffs, as sysfs over /sys does
os.makedirs(pins)
print(hostfs.filesystem_of(os.path.join(pins, "xdpfleet", "eth0")))
"""


def test_filesystem_of_sees_the_mount_a_path_lookup_reaches_not_a_hidden_one(tmp_path):
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
                           FILESYSTEM_OF_HIDDEN_MOUNT, COLLECTIONS, str(tmp_path / "top")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["bpf", "tmpfs"]
    assert hostfs.filesystem_of(str(tmp_path / "not" / "yet")) == hostfs.filesystem_of(str(tmp_path))


def test_pin_dirs_off_bpffs_are_refused():
    with pytest.raises(hostfs.HostfsError, match="pin_dir /tmp/pins is not on a bpf filesystem"):
        hostfs.check_pin_dir("/tmp/pins")
    with pytest.raises(hostfs.HostfsError, match="must be an absolute path"):
        hostfs.check_pin_dir("pins")
    hostfs.check_pin_dir("/sys/fs/bpf/xdpfleet/eth0")


def test_host_lock_is_exclusive(tmp_path):
    with hostfs.host_lock("eth0", str(tmp_path)):
        other = os.open(str(tmp_path / "eth0.lock"), os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
    with hostfs.host_lock("eth0", str(tmp_path)):
        pass


def test_an_atomic_write_replaces_the_file_with_its_mode_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "eth0.json"
    target.write_text("old")
    hostfs.write_atomically(str(target), "new", 0o600)
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    hostfs.write_atomically(str(target), "newer")
    assert target.read_text() == "newer" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(str(tmp_path)) == ["eth0.json"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "eth0.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        hostfs.write_atomically(str(target), 42)
    assert target.read_text() == "old" and os.listdir(str(tmp_path)) == ["eth0.json"]


def test_an_atomic_write_takes_bytes_too(tmp_path):
    target = tmp_path / "code.zip"
    hostfs.write_atomically(str(target), b"PK\x03\x04", 0o600)
    assert target.read_bytes() == b"PK\x03\x04" and target.stat().st_mode & 0o777 == 0o600


def test_file_digest(tmp_path):
    path = tmp_path / "object.o"
    path.write_bytes(b"abc")
    assert hostfs.file_sha256(str(path)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_refusals_are_xdpfleet_errors():
    assert issubclass(hostfs.HostfsError, XdpfleetError)
