"""What a lab host's kernel holds, read from the controller: XDP attachments, and the program's maps and
entries by id (BPF objects are global, so no namespace switch is needed), plus pins and desired state."""

import hashlib
import json
import os
import subprocess

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf

PER_CPU_TYPES = (5, 6, 10)  # percpu hash, percpu array, LRU percpu hash
ARRAY_TYPES = (2, 6)  # array, percpu array
RINGBUF = 27
# Arrays every packet may write (the bridge sends ND/MLD now and then): the counters, and the per-CPU
# working state the program classifies a packet in. Compared by shape only.
TRAFFIC_COUNTERS = ("xf_stats", "xf_hits", "xf_scratch")


def attached_programs(host):
    """{interface: XDP program id} of every link of the host."""
    shown = subprocess.run(["ip", "-n", host.netns, "-j", "-d", "link", "show"], capture_output=True, text=True,
                           check=True).stdout
    return {link["ifname"]: link.get("xdp", {}).get("prog", {}).get("id") for link in json.loads(shown)}


def _entries_digest(fd, info):
    """sha256 over every entry; arrays read whole in one batch (their keys are their indexes)."""
    value_size = info["value_size"]
    if info["type"] in PER_CPU_TYPES:
        value_size = libbpf.percpu_value_size(value_size) * libbpf.num_possible_cpus()
    if info["type"] in ARRAY_TYPES:
        return hashlib.sha256(libbpf.array_values(fd, value_size, info["max_entries"])).hexdigest()
    digest = hashlib.sha256()
    for key, value in sorted(libbpf.map_items(fd, info["key_size"], value_size, info["max_entries"])):
        digest.update(key + value)
    return digest.hexdigest()


def map_contents(map_id):
    """(name, type, sizes, digest of every entry) of one map; traffic counters without their values."""
    fd = libbpf.map_fd_by_id(map_id)
    try:
        info = libbpf.map_info(fd)
        shape = (info["name"], info["type"], info["key_size"], info["value_size"], info["max_entries"])
        if info["type"] == RINGBUF or (info["name"] in TRAFFIC_COUNTERS and info["type"] in ARRAY_TYPES):
            return shape
        return shape + (_entries_digest(fd, info),)
    finally:
        os.close(fd)


def program_state(prog_id):
    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        info = libbpf.prog_info(fd)
    finally:
        os.close(fd)
    return {"id": prog_id, "name": info["name"], "tag": info["tag"],
            "maps": {map_id: map_contents(map_id) for map_id in info["map_ids"]}}


def snapshot(host, files="/etc/xdpfleet"):
    """Programs, maps and entries the host's kernel holds, its pins and its desired-state files."""
    programs = attached_programs(host)
    # pins are listed, not read: reading a pinned map prints every entry
    listing = host.run("find %s -type f 2>/dev/null | sort | xargs -r sha256sum; find /sys/fs/bpf | sort" % files)
    return {"attached": programs,
            "programs": {name: program_state(prog_id) for name, prog_id in programs.items() if prog_id},
            "files": listing.out}
