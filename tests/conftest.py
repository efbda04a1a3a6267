"""Shared test setup: the collection is importable by FQCN, and a session-wide lab fleet."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".collections"))

import pytest  # noqa: E402

from tests.lab import Lab  # noqa: E402

LAB_HOSTS = 3


@pytest.fixture(scope="session")
def lab():
    """The lab fleet (xf-h1..), brought up if it is not running; left up for the next run."""
    return Lab.ensure(LAB_HOSTS)
