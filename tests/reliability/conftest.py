"""Fixtures of the reliability suite: its lab, deployed once."""

import subprocess

import pytest

from tests.helpers.hosts import playbook
from tests.lab import Lab
from tests.lab.layout import REPO
from tests.reliability.common import HOSTS, LAYOUT, deploy_variables


@pytest.fixture(scope="session")
def fleet():
    return Lab.ensure(HOSTS, LAYOUT)


@pytest.fixture(scope="session")
def deployed(fleet, tmp_path_factory):
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    run = playbook(fleet, "deploy_xdp.yml", tmp_path_factory.mktemp("deploy"), deploy_variables())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    return fleet
