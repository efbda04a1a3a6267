"""The lab fleet on the real kernel: isolation of each host, SSH and Ansible reachability, fast up, clean down."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import Lab, Layout
from tests.lab.layout import REPO
from tests.lab.processes import namespace_id, pids_in


def test_every_host_answers_over_ssh_with_its_own_hostname(lab):
    results = lab.run_parallel("hostname")
    assert results == {
        host.name: (0, f"{host.name}\n", "") for host in lab.hosts}


def test_ssh_and_nsenter_land_in_the_same_private_namespaces(lab):
    probe = ("hostname; ls /sys/class/net | tr '\\n' ' '; echo; "
             "stat -f -c %T /sys/fs/bpf /run /var/lib/xdpfleet /etc/xdpfleet | tr '\\n' ' '; echo")
    for host in lab.hosts:
        expected = f"{host.name}\neth0 lo \nbpf_fs tmpfs tmpfs tmpfs \n"
        assert host.ssh(probe) == (0, expected, "")
        assert host.run(probe) == (0, expected, "")


def test_ansible_setup_reports_each_hosts_own_hostname(lab, tmp_path):
    ansible = Path(sys.executable).parent / "ansible"
    done = subprocess.run(
        [ansible, "lab", "-i", lab.inventory, "-m", "setup", "-a", "filter=ansible_hostname", "--tree", tmp_path],
        cwd=REPO, env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    reported = {path.name: json.loads(path.read_text())["ansible_facts"]["ansible_hostname"]
                for path in tmp_path.iterdir()}
    assert reported == {host.name: host.name for host in lab.hosts}


def test_a_pin_in_one_hosts_bpffs_is_invisible_in_another(lab):
    first, second = lab.hosts[:2]
    pin = f"/sys/fs/bpf/lab_probe_{os.getpid()}"
    assert first.ssh(f"bpftool map create {pin} type array key 4 value 4 entries 1 name probe").rc == 0
    try:
        assert first.ssh(f"test -e {pin}").rc == 0
        assert second.ssh(f"test -e {pin}").rc == 1
        assert second.run(f"test -e {pin}").rc == 1
        assert not Path(pin).exists()
    finally:
        first.ssh(f"rm -f {pin}")


def test_client_reaches_every_host_over_ipv4(lab):
    for host in lab.hosts:
        assert lab.client.run(f"ping -c 1 -W 2 {host.address}").rc == 0


class ScratchLab:
    """A lab beside the session one, driven through the CLI, so building and tearing it down never
    disturbs `lab`; each test has its own, as pytest-xdist may run them at the same time."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def cli(self, *args) -> str:
        command = [sys.executable, "-m", "tests.lab", "--prefix", self.layout.prefix,
                   "--subnet", str(self.layout.subnet), *args]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def anchor_pids(self) -> dict[str, int]:
        return {host.name: host.pid for host in Lab.load(self.layout).hosts}

    def leftovers(self, namespace_ids, mount_namespace_ids) -> dict[str, list]:
        prefix = f"{self.layout.prefix}-"
        return {
            "netns": [line for line in _lines(["ip", "netns"]) if line.startswith(prefix)],
            "links": [line for line in _lines(["ip", "-o", "link"]) if prefix in line],
            "netns mounts": _mounts_containing(f"/run/netns/{prefix}"),
            "sshd": _lines(["pgrep", "-af", str(self.layout.state_dir)]),
            "processes in its netns": pids_in(namespace_ids),
            "processes in its mount namespaces": pids_in(mount_namespace_ids, "mnt"),
            "files": [str(path) for path in (self.layout.state_dir, self.layout.inventory) if path.exists()],
        }


def _lines(argv) -> list[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()  # pgrep: 1 = none


def _mounts_containing(text: str) -> list[str]:
    found = []
    for mounts in Path("/proc").glob("[0-9]*/mounts"):
        try:
            found += [line for line in mounts.read_text().splitlines() if text in line]
        except OSError:  # the process ended, or is a kernel thread without mounts
            continue
    return found


def _scratch(layout: Layout):
    yield ScratchLab(layout)
    Lab.load(layout).down()


@pytest.fixture
def growing_lab():
    yield from _scratch(Layout(prefix="xg", subnet=1))


@pytest.fixture
def fresh_lab():
    yield from _scratch(Layout(prefix="xt", subnet=2))


def test_up_twice_reuses_hosts_and_a_larger_up_adds_only_the_missing(growing_lab):
    growing_lab.cli("up", "--hosts", "3")
    first = growing_lab.anchor_pids()
    growing_lab.cli("up", "--hosts", "3")
    assert growing_lab.anchor_pids() == first
    growing_lab.cli("up", "--hosts", "5")
    grown = growing_lab.anchor_pids()
    assert len(grown) == 5 and {name: grown[name] for name in first} == first
    assert not any(Lab.load(growing_lab.layout).status().values())


def test_up_ten_hosts_is_fast_and_down_leaves_nothing_behind(fresh_lab):
    started = time.monotonic()
    fresh_lab.cli("up", "--hosts", "10")
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"up --hosts 10 took {elapsed:.1f} s"
    assert fresh_lab.cli("status").count("sshd=answers") == 10

    lab = Lab.load(fresh_lab.layout)
    last = lab.hosts[-1]
    link_local = last.run("ip -6 -o addr show dev eth0 scope link").out.split()[3].split("/")[0]
    assert lab.client.run(f"ping -6 -c 1 -W 2 {link_local}%eth0").rc == 0

    namespace_ids = {namespace_id(f"/run/netns/{node.netns}") for node in [lab.client, *lab.hosts]}
    mount_namespace_ids = {namespace_id(f"/proc/{host.pid}/ns/mnt") for host in lab.hosts}
    fresh_lab.cli("down")
    assert fresh_lab.leftovers(namespace_ids, mount_namespace_ids) == {
        "netns": [], "links": [], "netns mounts": [], "sshd": [], "processes in its netns": [],
        "processes in its mount namespaces": [], "files": []}
