"""Every Molecule scenario (what `molecule test --all` runs), one test per scenario so each reports its
own result and wall time; afterwards nothing of the scenario's lab may be left.

A scenario names its lab in molecule.yml (`lab_prefix`, `lab_subnet` in group_vars `all`); create.yml
and destroy.yml bring that lab up and down, beside the lab the other suites share. The vm scenario's
lab holds qemu guests (tests/vm) on taps instead of namespaces."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import leftovers
from tests.lab import Layout
from tests.lab.layout import REPO

MOLECULE = Path(sys.executable).parent / "molecule"
SCENARIOS = ("default", "rolling", "vm")
SCENARIO_FILES = [REPO / "molecule" / name / "molecule.yml" for name in SCENARIOS]
TIMEOUT = 1800


def scenario_lab(scenario_file: Path) -> Layout:
    lab = yaml.safe_load(scenario_file.read_text())["provisioner"]["inventory"]["group_vars"]["all"]
    return Layout(lab["lab_prefix"], lab["lab_subnet"])


def molecule_test(scenario: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", ANSIBLE_NOCOLOR="1",
               PATH="%s:%s" % (MOLECULE.parent, os.environ["PATH"]))
    env.pop("ANSIBLE_CONFIG", None)  # Molecule writes the scenario's own ansible.cfg
    return subprocess.run([str(MOLECULE), "test", "--scenario-name", scenario], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT, check=False)


@pytest.mark.parametrize("scenario_file", SCENARIO_FILES, ids=[path.parent.name for path in SCENARIO_FILES])
def test_molecule_scenario_passes_and_leaves_no_lab_behind(scenario_file, record_property):
    scenario = scenario_file.parent.name
    lab = scenario_lab(scenario_file)  # named before the run: the run's leftover check covers this lab too
    started = time.monotonic()
    run = molecule_test(scenario)
    wall = time.monotonic() - started
    record_property("wall_seconds", round(wall, 1))
    print("molecule scenario %s: rc %d in %.0f s" % (scenario, run.returncode, wall))
    assert run.returncode == 0, "molecule test -s %s: rc %d after %.0f s\n%s" % (
        scenario, run.returncode, wall, run.stdout[-6000:])
    assert leftovers.of_lab(lab.prefix) == {}
