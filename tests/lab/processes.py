"""Finding and ending the processes that live in the lab's namespaces."""

import os
import signal
import time
from pathlib import Path


def namespace_id(path) -> tuple[int, int]:
    """(device, inode) names a namespace, whether reached by /run/netns/x or /proc/<pid>/ns/x."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    """Space-joined: sshd rewrites its title into one string that still holds its arguments."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def pids_in(namespaces: set[tuple[int, int]], kind: str = "net") -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if namespace_id(entry / "ns" / kind) in namespaces:
                pids.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pids


def _reap(pid: int) -> None:
    """Collect our own children (anchors started by this process) so they leave no zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill_all(pids, timeout: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    waiting = set(pids)
    while waiting:
        for pid in list(waiting):
            _reap(pid)
            if not _is_running(pid):
                waiting.discard(pid)
        if waiting and time.monotonic() > deadline:
            raise TimeoutError(f"processes did not end after SIGKILL: {sorted(waiting)}")
        if waiting:
            time.sleep(0.01)
