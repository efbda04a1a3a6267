"""The collection as a user gets it: built by ansible-galaxy from this checkout, installed into an empty
collections path and used from there, with nothing of the checkout (its ansible.cfg, its .collections link).
The check-mode deploy runs on a lab of its own (prefix pk, 198.18.70.0/24, 1 host)."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.lab import Lab, Layout
from tests.lab.layout import REPO

LAYOUT = Layout("pk", 70)
VENV_BIN = Path(sys.executable).parent
MODULES = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("xdp_*.py"))
# the checkout's development and test tooling, and its link back to itself
NOT_SHIPPED = ["tests", "bench", "molecule", "scripts", "build", ".collections", "Makefile", "ansible.cfg",
               "requirements.txt", "requirements-test.txt", "pytest.ini"]
# what the firewall role needs on the controller to compile the firewall and pack the restore entry point
CONTROLLER_BUILD = ["bpf/xdp_firewall.bpf.c", "bpf/xdp_firewall.h", "roles/firewall/files/build.py",
                    "roles/firewall/files/restore_main.py", "plugins/action/xdp_program.py"]
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    output = tmp_path_factory.mktemp("build")
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(output), str(REPO)],
                   capture_output=True, text=True, timeout=300, check=True)
    (built,) = output.glob("xdpfleet-xdp-*.tar.gz")
    return built


class User:
    """A controller that knows the collection only from its install: own working directory, empty
    ansible.cfg, the install as its only collections path."""

    def __init__(self, home, tarball):
        self.home = home
        self.collections = home / "collections"
        (home / "ansible.cfg").write_text("[defaults]\n")
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
        self.env.update(PATH="%s:%s" % (VENV_BIN, os.environ["PATH"]), ANSIBLE_CONFIG=str(home / "ansible.cfg"),
                        ANSIBLE_COLLECTIONS_PATH=str(self.collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
        installed = self.run(["ansible-galaxy", "collection", "install", "-p", str(self.collections), str(tarball)])
        assert installed.returncode == 0, installed.stdout + installed.stderr

    @property
    def collection(self):
        return self.collections / "ansible_collections" / "xdpfleet" / "xdp"

    def run(self, argv, timeout=300):
        return subprocess.run(argv, cwd=self.home, env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)


@pytest.fixture(scope="module")
def user(tmp_path_factory, tarball):
    return User(tmp_path_factory.mktemp("user"), tarball)


@pytest.fixture(scope="module")
def fleet():
    lab = Lab.up(1, LAYOUT)
    yield lab
    lab.down()


def test_tarball_holds_what_runs_on_controller_and_hosts_and_no_checkout_tooling(tarball):
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
    names = {member.name for member in members}
    assert sorted(name for name in names for left_out in NOT_SHIPPED
                  if name == left_out or name.startswith(left_out + "/")) == []
    assert [member.name for member in members if member.issym() or member.islnk()] == []
    assert sorted(set(CONTROLLER_BUILD) - names) == []


def test_the_install_has_no_link_back_into_itself(user):
    links = [path for path in user.collection.rglob("*") if path.is_symlink()]
    assert links == []


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_reads_each_module_from_the_install(user, module):
    shown = user.run(["ansible-doc", "--json", "xdpfleet.xdp.%s" % module])
    assert shown.returncode == 0, shown.stderr
    entry = json.loads(shown.stdout)["xdpfleet.xdp.%s" % module]
    assert Path(entry["doc"]["filename"]).is_relative_to(user.collection)
    assert entry["examples"] and entry["return"]


def test_check_mode_deploy_from_the_install_reports_changes_and_changes_nothing(user, fleet):
    host = fleet.hosts[0]
    run = user.run(["ansible-playbook", "-i", str(fleet.inventory), "xdpfleet.xdp.deploy_xdp", "--check"], timeout=600)
    recap = {name: (int(changed), int(unreachable), int(failed)) for name, changed, unreachable, failed
             in RECAP.findall(run.stdout)}
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    changed, unreachable, failed = recap[host.name]
    assert (unreachable, failed) == (0, 0) and changed > 0, recap
    assert host.run("ip -d link show dev eth0").out.count("xdp") == 0, "check mode attached a program"
    assert host.run("ls -A /etc/xdpfleet /var/lib/xdpfleet").out.split() == ["/etc/xdpfleet:", "/var/lib/xdpfleet:"]
