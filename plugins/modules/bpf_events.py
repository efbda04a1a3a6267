#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: bpf_events
short_description: Read the events BPF programs send through a ring buffer, decoded as their struct
version_added: 0.2.0
description:
  - Reads the records of a pinned BPF ring buffer map (C(BPF_MAP_TYPE_RINGBUF)) for up to O(timeout) seconds
    or until O(count) records were read, and returns each decoded from the BTF of the struct its programs
    write (O(record_type)), as M(xdpfleet.xdp.xdp_map) decodes map values (integers, enum names, strings for
    char arrays, lists for arrays, dicts for nested structs). So a program's own event struct needs no code.
  - The struct is looked up in the BTF of a program that uses the map (found among the kernel's programs), so
    the programs must be built with C(-g) and loaded; M(xdpfleet.xdp.bpf_program) and
    M(xdpfleet.xdp.xdp_program) keep them loaded and pin the map.
  - Records wait in the ring buffer until read, and reading consumes them (a ring buffer keeps one read
    position for all its readers), so the module reports C(changed=true) when it returned records.
author:
  - xdpfleet developers (@xdpfleet)
extends_documentation_fragment:
  - xdpfleet.xdp.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the records are read without being consumed (as M(xdpfleet.xdp.xdp_drops) peeks).
  diff_mode:
    support: none
    details: The records are the result; there is nothing to compare before and after.
options:
  map:
    description: The ring buffer's name in O(pin_dir), or the absolute path of its pin.
    type: str
    required: true
  pin_dir:
    description:
      - Directory of the pin when O(map) is a name; defaults to that of the M(xdpfleet.xdp.bpf_program) set
        O(name).
    type: path
  name:
    description: The M(xdpfleet.xdp.bpf_program) set whose pin directory holds O(map).
    type: str
  record_type:
    description:
      - Name of the C struct of the records (C(struct NAME)). Without it each record is returned as C(data),
        its bytes in hex. A record shorter than the struct is returned that way too.
    type: str
  timeout:
    description: Seconds to wait for records.
    type: float
    default: 1.0
  count:
    description: Return as soon as this many records were read; V(0) reads until O(timeout).
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Gather the write events of the write monitor for 2 seconds
  xdpfleet.xdp.bpf_events:
    name: write_monitor
    map: events
    record_type: write_event
    timeout: 2
  register: writes

- name: Show the processes that wrote
  ansible.builtin.debug:
    msg: "{{ writes.events | map(attribute='comm') | unique | list }}"
"""

RETURN = r"""
events:
  description: The records, oldest first, each a dict of the struct's fields (or C(data) in hex).
  returned: always
  type: list
  elements: dict
  sample:
    - pid: 4242
      bytes: 12
      comm: nginx
map:
  description: The ring buffer read.
  returned: always
  type: dict
  contains:
    name:
      description: Map name.
      type: str
    id:
      description: Kernel map id.
      type: int
    path:
      description: Its pin.
      type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._hostfs import default_tracing_pin_dir
from ansible_collections.xdpfleet.xdp.plugins.module_utils._tracing_events import read_events


def main():
    module = AnsibleModule(
        argument_spec=dict(
            map=dict(type="str", required=True),
            pin_dir=dict(type="path"),
            name=dict(type="str"),
            record_type=dict(type="str"),
            timeout=dict(type="float", default=1.0),
            count=dict(type="int", default=0),
        ),
        mutually_exclusive=[("pin_dir", "name")],
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] < 0 or params["count"] < 0:
        module.fail_json(msg="timeout and count must not be negative")
    directory = params["pin_dir"] or (params["name"] and default_tracing_pin_dir(params["name"]))
    if not os.path.isabs(params["map"]) and not directory:
        module.fail_json(msg="map: %s is a name, so name (the bpf_program set) or pin_dir is needed to find it"
                             % params["map"])
    try:
        result = read_events(os.path.join(directory or "", params["map"]), params["record_type"],
                             params["timeout"], params["count"], consume=not module.check_mode)
    except XdpfleetError as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=bool(result["events"]), **result)


if __name__ == "__main__":
    main()
