"""The processes that fire armed reverts where systemd does not run (_fw_confirm's timer processes), found by their
command line, so that a test ends and awaits those it started."""

import time
from pathlib import Path

from ansible_collections.xdpfleet.xdp.plugins.module_utils._revert_timer import TIMER_CODE
from tests.lab import processes


def running(pid: int) -> bool:
    """Whether pid is a timer process (not a zombie: those have no command line)."""
    return TIMER_CODE in processes.cmdline(pid)


def pids(marker: str = "") -> list[int]:
    """The timer processes whose command line also holds marker (such as a test's state directory)."""
    numbers = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in numbers if running(pid) and marker in processes.cmdline(pid)]


def of_host(host) -> list[int]:
    """The timer processes in a lab host's network namespace."""
    inside = set(processes.pids_in({processes.namespace_id(f"/run/netns/{host.netns}")}))
    return [pid for pid in pids() if pid in inside]


def end(found) -> None:
    processes.kill_all(found)


def ended(found, timeout=5.0):
    """True once found() lists no timer process (a daemon's end: init reaps it); False while it still lists one after
    timeout seconds."""
    deadline = time.monotonic() + timeout
    while found():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
