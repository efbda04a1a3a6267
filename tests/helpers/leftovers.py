"""What labs leave on the machine, each trace tagged with its lab's prefix (network namespaces, root-namespace
links, state directories, and the processes that run from those: sshd anchors, qemu guests), and the bpffs
mounts of the root mount namespace. A test run compares them at its end with what it found at its start."""

import re
from collections import namedtuple
from pathlib import Path

from pyroute2 import IPRoute

from tests.lab import links, processes
from tests.lab.layout import STATE_ROOT
from tests.vm.guests import STATE_ROOT as VM_STATE_ROOT

LAB_NAME = re.compile(r"([a-z][a-z0-9]{0,2})-")  # "<prefix>-...", see Layout
# A file of one host or guest of a lab ("<root>/<prefix>/<prefix>-h1/sshd_config"), as its anchor sshd or qemu
# process names one; the controller's ssh clients name only the lab's key, one level up.
LAB_ROOTS = "|".join(re.escape(str(root)) for root in (STATE_ROOT, VM_STATE_ROOT))
HOST_FILE = re.compile(r"(?:%s)/([a-z][a-z0-9]{0,2})/\1-[^/\s]+/\S*" % LAB_ROOTS)

Trace = namedtuple("Trace", "kind prefix what")


def _named(kind: str, names) -> set[Trace]:
    return {Trace(kind, match.group(1), name) for name in names if (match := LAB_NAME.match(name))}


def lab_traces() -> set[Trace]:
    with IPRoute() as ipr:
        link_names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    found = _named("namespace", links.namespaces()) | _named("link", link_names)
    found |= {Trace("state", path.name, str(path))
              for root in (STATE_ROOT, VM_STATE_ROOT) if root.is_dir() for path in root.iterdir() if path.is_dir()}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            # a path from the command line, not all of it: sshd rewrites the rest of its title as it runs
            if match := HOST_FILE.search(processes.cmdline(int(entry.name))):
                found.add(Trace("process", match.group(1), f"pid {entry.name} {match.group(0)}"))
    return found


def of_lab(prefix: str) -> dict[str, list[str]]:
    """{kind: what} of every trace of one lab on the machine now."""
    found = {}
    for trace in sorted(lab_traces()):
        if trace.prefix == prefix:
            found.setdefault(trace.kind, []).append(trace.what)
    return found


def bpffs_mounts() -> set[str]:
    """Mount points of the bpffs instances of this process's mount namespace."""
    fields = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    return {mount[1] for mount in fields if mount[2] == "bpf"}
