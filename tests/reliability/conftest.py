"""Fixtures of the reliability suite: its lab, deployed once."""

import subprocess

import pytest
import yaml

from tests.helpers.hosts import playbook
from tests.lab import Lab
from tests.lab.layout import REPO
from tests.reliability.common import HOSTS, LAYOUT, LOST_STATE_HOST, SECOND_INTERFACE, deploy_variables


@pytest.fixture(scope="session")
def fleet():
    with Lab.running(HOSTS, LAYOUT) as lab:
        yield lab


def add_second_interface(lab):
    """A veth pair inside rl-h2; the firewall goes on its xt0 end too (host_vars beside the inventory)."""
    host = lab.hosts[LOST_STATE_HOST]
    host.run("ip link del %s 2>/dev/null; ip link add %s type veth peer name %sp && ip link set %s up && "
             "ip link set %sp up" % ((SECOND_INTERFACE,) * 5))
    host_vars = lab.inventory.parent / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / ("%s.yml" % host.name)).write_text(yaml.safe_dump({"xdp_interfaces": ["eth0", SECOND_INTERFACE]}))


@pytest.fixture(scope="session")
def deployed(fleet, tmp_path_factory):
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    add_second_interface(fleet)
    run = playbook(fleet, "deploy_xdp.yml", tmp_path_factory.mktemp("deploy"), deploy_variables())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    return fleet
