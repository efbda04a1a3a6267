# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracing programs xdpfleet attached for one pin directory: the BPF links pinned in <pin_dir>/links (a
tracing link lives only as long as something holds it, and bpffs pins are what holds them across runs), each
described from the kernel by its program's xdpfleet_meta record (_ownership); maps are pinned as <pin_dir>/<map>.
Links are found by their pins rather than by walking every link id: lab hosts share one kernel, not one bpffs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs, _ownership
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._object_load import ProgramError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._tracing_kinds import link_type_name

LINKS_DIR = "links"


def link_pin(pin_dir, program):
    return os.path.join(pin_dir, LINKS_DIR, program)


def _pinned_links(pin_dir):
    """(pin name, link info, program description) of every link pinned in pin_dir/links."""
    links_dir = os.path.join(pin_dir, LINKS_DIR)
    for name in _hostfs.pinned_names(links_dir):
        try:
            fd = libbpf.obj_get(_hostfs.pin_path(links_dir, name))
        except libbpf.LibbpfError:
            continue  # unpinned meanwhile
        with _ownership.opened(fd):
            info = libbpf.link_info(fd)
        yield name, info, _ownership.describe_program(info["prog_id"], None)


def describe(pin_dir):
    """The programs running through links pinned in pin_dir, sorted by program name. A link pinned there whose
    program xdpfleet did not load (no xdpfleet_meta record naming pin_dir) is refused."""
    programs = []
    for pin, info, described in _pinned_links(pin_dir):
        if described["owner"] != _ownership.OWNER_XDPFLEET or described["pin_dir"] != pin_dir:
            raise ProgramError("%s holds link %d of program %s (id %d), which xdpfleet did not load for this pin_dir; "
                               "remove that pin or choose another pin_dir"
                               % (link_pin(pin_dir, pin), info["id"], described["name"], info["prog_id"]))
        programs.append({
            "name": described["program"], "link_id": info["id"], "link_type": link_type_name(info["type"]),
            "prog_id": info["prog_id"], "tag": described["tag"], "object_sha256": described["object_sha256"],
            "map_schema_version": described["map_schema_version"], "maps": described["maps"],
            "link_pinned": pin == described["program"]})
    return sorted(programs, key=lambda program: (program["name"], program["link_id"]))


def maps_of(programs):
    """The maps of the programs, each once, by name."""
    return sorted(dict((item["name"], item) for program in programs for item in program["maps"]).values(),
                  key=lambda item: item["name"])


def as_loaded(programs, pin_dir):
    """The programs as one described XDP program for _object_load's carry-over of maps and removal of pins."""
    if not programs:
        return dict(_ownership.NOT_ATTACHED)
    return {"owner": _ownership.OWNER_XDPFLEET, "pin_dir": pin_dir, "maps": maps_of(programs),
            "map_schema_version": programs[0]["map_schema_version"]}


def is_current(programs, names, sha256, pin_dir):
    """Whether exactly the named programs of the object with sha256 run, each through one pinned link, with
    every map pinned."""
    return (sorted(program["name"] for program in programs) == sorted(names)
            and all(program["object_sha256"] == sha256 and program["link_pinned"] for program in programs)
            and not _ownership.missing_pins({"maps": maps_of(programs)}, pin_dir))
