"""The firewall's load-time verification stays within its budget (docs/PERFORMANCE.md, load-time verification):
the instructions the verifier processes grow with every condition it has to walk at every place a rule is matched,
and the budget keeps loads quick on every host and far from the kernel's limit of 1,000,000."""

import re
import subprocess
import tempfile

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs

from .conftest import OBJECT

BUDGET = 100000


def instructions_processed(path):
    """The verifier's `processed N insns` for every program of the object, loaded by bpftool with its log."""
    _hostfs.mount_bpffs()
    with tempfile.TemporaryDirectory(prefix="xf-verifier-", dir=_hostfs.BPFFS_ROOT) as pins:
        loaded = subprocess.run(["bpftool", "-d", "prog", "loadall", path, pins], capture_output=True, text=True,
                                check=False)
    counts = [int(count) for count in re.findall(r"^processed (\d+) insns", loaded.stdout + loaded.stderr, re.M)]
    assert loaded.returncode == 0 and counts, loaded.stderr[-2000:]
    return sum(counts)


def test_verification_stays_within_its_budget():
    assert instructions_processed(OBJECT) <= BUDGET
