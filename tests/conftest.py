"""Shared test setup: the collection is importable by FQCN, a session-wide lab fleet, and the check that
a test run leaves the machine as it found it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".collections"))

import pytest  # noqa: E402

from tests.helpers import leftovers  # noqa: E402
from tests.lab import Lab  # noqa: E402
from tests.lab.fleet import in_use  # noqa: E402
from tests.lab.layout import NAMED_PREFIXES  # noqa: E402

LAB_HOSTS = 3
FOUND_AT_START = pytest.StashKey[tuple]()
LEFT_BEHIND = pytest.StashKey[list]()
RUN_TEMP_DIRS = set()  # where this run's tests make files, and mount their own bpffs instances


@pytest.fixture(scope="session")
def lab():
    """The lab fleet (xf-h1..): a running one is reused and left running, one built here is taken down."""
    with Lab.running(LAB_HOSTS) as fleet:
        yield fleet


@pytest.fixture(scope="session", autouse=True)
def run_temp_dir(tmp_path_factory):
    RUN_TEMP_DIRS.add(tmp_path_factory.getbasetemp())


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session):
    if not _is_xdist_worker(session.config):
        session.config.stash[FOUND_AT_START] = (leftovers.lab_traces(), leftovers.bpffs_mounts())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist: what a worker named and used is checked by the controller, once every worker is done."""
    NAMED_PREFIXES.update(node.workeroutput.get("lab_prefixes", ()))
    RUN_TEMP_DIRS.update(Path(path) for path in node.workeroutput.get("temp_dirs", ()))


def _mounted_by_this_run(mount: str) -> bool:
    """A mount in this run's temp dirs, or anywhere but in the temp dirs of other pytest runs."""
    path = Path(mount)
    return (any(path.is_relative_to(directory) for directory in RUN_TEMP_DIRS)
            or not any(part.startswith("pytest-of-") for part in path.parts))


def left_behind(found_at_start) -> list[str]:
    """What is on the machine now and was not at the start of the run, and this run made: traces of the
    labs it named (except of a lab a test in another process is still using) and bpffs mounts."""
    traces_at_start, mounts_at_start = found_at_start
    traces = {trace for trace in leftovers.lab_traces() - traces_at_start
              if trace.prefix in NAMED_PREFIXES and not in_use(trace.prefix)}
    mounts = {mount for mount in leftovers.bpffs_mounts() - mounts_at_start if _mounted_by_this_run(mount)}
    return ([f"{trace.kind} of lab {trace.prefix}: {trace.what}" for trace in sorted(traces)]
            + [f"bpffs mount: {mount}" for mount in sorted(mounts)])


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown
def pytest_sessionfinish(session):
    if _is_xdist_worker(session.config):
        session.config.workeroutput.update(lab_prefixes=sorted(NAMED_PREFIXES),
                                           temp_dirs=[str(path) for path in RUN_TEMP_DIRS])
        return
    session.config.stash[LEFT_BEHIND] = left_behind(session.config.stash[FOUND_AT_START])
    if session.config.stash[LEFT_BEHIND]:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # the last section, just above the counts
def pytest_terminal_summary(terminalreporter, config):
    found = config.stash.get(LEFT_BEHIND, [])
    if found:
        terminalreporter.write_sep("=", "FAILED: left behind by this run, which must leave the machine as it found it",
                                   red=True)
        for line in found:
            terminalreporter.write_line(line)
