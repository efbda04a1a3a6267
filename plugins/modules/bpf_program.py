#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: bpf_program
short_description: Attach, upgrade and detach the tracing programs of a BPF object
version_added: 0.2.0
description:
  - Loads the tracing programs of a BPF ELF object with libbpf (sections C(tracepoint/), C(tp/), C(raw_tp/),
    C(tp_btf/), C(fentry/), C(fexit/), C(kprobe/), C(kretprobe/)), attaches each where its section says through a
    BPF link, and pins the links (C(<pin_dir>/links/<program>)) and the maps (C(<pin_dir>/<map>), where
    M(xdpfleet.xdp.xdp_map) finds them), so the programs keep running after the module exits and across runs.
  - Idempotent. When the same object's programs run, each through its pinned link, the module changes nothing.
    A different object is attached first and its links then pinned over the old ones, which detaches the old
    programs, so no event goes unseen; maps with an unchanged layout keep their contents.
  - Each program carries the same C(xdpfleet_meta) record as the XDP programs xdpfleet loads (object hash,
    program, pin directory), so what runs is read from the kernel.
  - A program of a kind the kernel lacks is refused before anything is loaded (kprobes without
    C(CONFIG_KPROBES)), or when the kernel refuses to load it (fentry/fexit where BPF trampolines are
    forbidden); the message names the alternative. See docs/TRACING.md for the kernels tested.
author:
  - xdpfleet developers (@xdpfleet)
extends_documentation_fragment:
  - xdpfleet.xdp.attributes
attributes:
  check_mode:
    support: full
    details:
      - Check mode opens the object and refuses programs the kernel lacks, but loads nothing, so a program the
        verifier or the kernel would refuse is found by a real run only.
  diff_mode:
    support: full
options:
  name:
    description:
      - Name of this set of programs on the host; its pins are in C(/sys/fs/bpf/xdpfleet/tracing/<name>) unless
        O(pin_dir) says otherwise.
    type: str
    required: true
  state:
    description:
      - V(attached) loads and attaches the programs; V(detached) removes their links and every pin of O(pin_dir),
        then the directory.
    type: str
    choices: [attached, detached]
    default: attached
  object:
    description:
      - Path of the compiled BPF ELF object on the managed host. Required with O(state=attached).
    type: path
  object_sha256:
    description: Expected SHA-256 of O(object); an object with another hash is refused.
    type: str
  programs:
    description:
      - Names of the programs (C functions) of the object to attach; defaults to every tracing program of it.
        Programs of other kinds (XDP, for one) are never loaded.
    type: list
    elements: str
  pin_dir:
    description:
      - Directory on the bpf filesystem for the links and maps. Defaults to
        C(/sys/fs/bpf/xdpfleet/tracing/<name>).
    type: path
  map_migration:
    description:
      - On upgrade, a map whose layout or schema version changed is refused with V(keep) and starts empty with
        V(reset). Maps with an unchanged layout always keep their contents.
    type: str
    choices: [keep, reset]
    default: keep
notes:
  - Needs root (CAP_BPF, CAP_PERFMON), libbpf.so.1 on the host, tracefs for C(tracepoint/) programs and kernel
    BTF for C(tp_btf/), C(fentry/) and C(fexit/) programs.
requirements:
  - libbpf >= 1.0 on the managed host
seealso:
  - module: xdpfleet.xdp.bpf_events
  - module: xdpfleet.xdp.xdp_map
"""

EXAMPLES = r"""
- name: Copy your tracing object (files/write_monitor.o) to the host
  ansible.builtin.copy:
    src: write_monitor.o
    dest: /usr/local/lib/xdpfleet/write_monitor.o
    mode: "0644"

- name: Attach its tracing programs
  xdpfleet.xdp.bpf_program:
    name: write_monitor
    object: /usr/local/lib/xdpfleet/write_monitor.o

- name: Detach them and remove their pins
  xdpfleet.xdp.bpf_program:
    name: write_monitor
    state: detached
"""

RETURN = r"""
programs:
  description: The programs that run, each through its pinned link; empty after O(state=detached).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The program's name (its C function).
      type: str
    link_id:
      description: Kernel id of its BPF link.
      type: int
    link_type:
      description: The link's kind (V(perf_event) for C(tracepoint/) and C(kprobe/), V(raw_tracepoint) for
        C(raw_tp/) and C(tp_btf/), V(tracing) for C(fentry/) and C(fexit/)).
      type: str
    prog_id:
      description: Kernel id of the program.
      type: int
    tag:
      description: The program's tag as the kernel reports it.
      type: str
    object_sha256:
      description: SHA-256 of the object it was loaded from.
      type: str
maps:
  description: The programs' maps (global-variable maps left out), pinned in RV(pin_dir) under their names.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Map name, also its pin name.
      type: str
    id:
      description: Kernel map id.
      type: int
object_sha256:
  description: SHA-256 of the object the running programs were loaded from; null when none run.
  returned: always
  type: str
pin_dir:
  description: Directory of the pins.
  returned: always
  type: str
  sample: /sys/fs/bpf/xdpfleet/tracing/write_monitor
pins_removed:
  description: Pins removed by O(state=detached).
  returned: when O(state=detached)
  type: list
  elements: str
verifier_log:
  description: End of the verifier log when the kernel rejected a program.
  returned: on a verifier rejection
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
    from ansible_collections.xdpfleet.xdp.plugins.module_utils._tracing import run
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["attached", "detached"], default="attached"),
            object=dict(type="path"),
            object_sha256=dict(type="str"),
            programs=dict(type="list", elements="str"),
            pin_dir=dict(type="path"),
            map_migration=dict(type="str", choices=["keep", "reset"], default="keep"),
        ),
        required_if=[("state", "attached", ("object",))],
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="cannot import the xdpfleet module_utils", exception=IMPORT_ERROR)
    try:
        result = run(module.params, module.check_mode)
    except XdpfleetError as error:
        module.fail_json(msg=str(error), **getattr(error, "details", {}))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
