#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: xdp_map
short_description: Manage the entries of a pinned BPF map
version_added: 0.1.0
description:
  - Reads, adds, updates and removes the entries of any BPF map pinned on the bpf filesystem, ours or a
    user's program's, in the style of the network resource modules.
  - Keys and values are typed from the map's BTF where it has any (a struct becomes a dict of its fields,
    an array a list, a C(char) array a string, an enum the name of its value), else from O(key_type) and
    O(value_type), else they are hex strings.
  - Reads the current entries, computes the difference and writes only that, in batches
    (C(BPF_MAP_UPDATE_BATCH), C(BPF_MAP_DELETE_BATCH) where the map type supports them).
  - Every input is checked before anything is written, and a change that would not fit in the map is
    refused, so a failure leaves the map as it was. Should the kernel still refuse a write part-way, the
    entries already touched are put back before the module fails.
  - Manages hash, LRU hash, array, LPM trie and the per-CPU variants of hash, LRU hash and array.
  - B(Per-CPU maps) are treated as counters. An entry's value is the sum over every possible CPU (integer
    fields summed; strings, addresses and bytes are CPU 0's). An entry that exists keeps its per-CPU values
    unless O(reset_counters=true), so re-running a play never resets what the program counted. A value
    that is written goes into every possible CPU's slot, the value in CPU 0's and zero in the others', so
    the sum that O(state=gathered) reports is exactly the value written.
  - B(Array maps) cannot delete elements. An element whose bytes are all zero counts as absent (O(state=gathered)
    leaves it out), and removing an element writes zeros into it.
author:
  - xdpfleet developers (@xdpfleet)
extends_documentation_fragment:
  - xdpfleet.xdp.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  map:
    description:
      - The map, either its pin name in O(pin_dir) or an absolute path on the bpf filesystem.
    type: str
    required: true
  interface:
    description:
      - Interface whose xdpfleet pin directory C(/sys/fs/bpf/xdpfleet/<interface>) holds O(map).
      - Not needed when O(map) is an absolute path or O(pin_dir) is given.
    type: str
  pin_dir:
    description:
      - Directory on the bpf filesystem holding O(map). Overrides the directory that O(interface) implies.
    type: path
  entries:
    description:
      - The entries to manage. Entries are identified by their key in every state.
      - Required with O(state=merged), O(state=replaced) and O(state=overridden); not allowed with
        O(state=gathered). With O(state=deleted) only the keys count, and leaving O(entries) out removes every
        entry (an empty list removes none).
    type: list
    elements: dict
    suboptions:
      key:
        description:
          - The key, in the form of the key type (an int, an address, a prefix, a dict for a struct, ...).
        type: raw
        required: true
      value:
        description:
          - The value, in the form of the value type. Fields of a struct that are left out are zero, except
            with O(state=merged) on an existing entry of a map that is not per-CPU, where they keep their
            current value.
        type: raw
  state:
    description:
      - V(merged) adds the entries whose key is missing and updates the listed entries whose value differs;
        a struct value may name only the fields to change.
      - V(replaced) is V(merged) except that the value of each listed entry is replaced as a whole (struct
        fields left out become zero); entries not listed are left alone.
      - V(overridden) makes the map hold exactly O(entries), removing every other entry.
      - V(deleted) removes the listed keys (every entry when O(entries) is left out).
      - V(gathered) changes nothing and returns the entries in RV(gathered).
    type: str
    choices: [merged, replaced, overridden, deleted, gathered]
    default: merged
  key_type:
    description:
      - How to read and write keys. Overrides the map's BTF, for example V(cidr4) for the C(struct) key of an
        LPM trie. Must have the map's key size.
      - V(u8) to V(u64) are host byte order integers; V(ipv4) and V(ipv6) addresses in network byte order;
        V(cidr4) and V(cidr6) are LPM trie keys (a C(u32) prefix length then the address), written as
        C(198.18.0.0/15), whose host bits must be zero; V(mac) is C(aa:bb:cc:dd:ee:ff); V(hex) any bytes.
      - Without BTF and without this option, keys are V(hex).
    type: str
    choices: [u8, u16, u32, u64, ipv4, ipv6, cidr4, cidr6, mac, hex]
  value_type:
    description:
      - How to read and write values, as O(key_type) does for keys.
    type: str
    choices: [u8, u16, u32, u64, ipv4, ipv6, cidr4, cidr6, mac, hex]
  reset_counters:
    description:
      - Per-CPU maps only. Also rewrite existing entries whose summed value differs from the one given,
        discarding their per-CPU counters. Without it existing per-CPU entries are never rewritten.
    type: bool
    default: false
  per_cpu:
    description:
      - Per-CPU maps only. Add each entry's list of values per possible CPU (RV(gathered[].per_cpu)).
    type: bool
    default: false
notes:
  - Needs root (CAP_BPF) and libbpf.so.1 (Debian package C(libbpf1)) on the host.
  - The map is not locked against the program or other writers; entries the data plane changes between
    the read and the write are overwritten only if they are in the computed difference.
requirements:
  - libbpf >= 1.0 on the managed host
seealso:
  - module: xdpfleet.xdp.xdp_program
"""

EXAMPLES = r"""
# Maps of the firewall that xdpfleet.xdp.xdp_program (or the xdpfleet.xdp.firewall role) attached, pinned in
# /sys/fs/bpf/xdpfleet/<interface>. Its rules are xdpfleet.xdp.xdp_rules' business, not this module's.
- name: Read the firewall's packet and byte counters per XDP action (xf_stats), with the per-CPU breakdown
  xdpfleet.xdp.xdp_map:
    interface: eth0
    map: xf_stats
    state: gathered
    per_cpu: true
  register: firewall_stats

- name: Zero the firewall's drop counters (xf_stats key 1, XDP_DROP) on every CPU
  xdpfleet.xdp.xdp_map:
    interface: eth0
    map: xf_stats
    state: deleted
    entries:
      - key: 1

# Maps of your own program, pinned where it pins them (here /sys/fs/bpf/myapp).
- name: Block two prefixes in your own program's LPM trie, whose key is a struct (prefix length, address)
  xdpfleet.xdp.xdp_map:
    pin_dir: /sys/fs/bpf/myapp
    map: deny_v4
    key_type: cidr4
    value_type: u32
    entries:
      - key: 198.18.0.0/24
        value: 1
      - key: 198.19.128.0/17
        value: 2

- name: Set one field of a struct value in your own program's map, keeping the others
  xdpfleet.xdp.xdp_map:
    map: /sys/fs/bpf/myapp/backends
    entries:
      - key: 7
        value:
          weight: 20

- name: Make your own program's allow list exactly this
  xdpfleet.xdp.xdp_map:
    pin_dir: /sys/fs/bpf/myapp
    map: allow_mac
    key_type: mac
    value_type: u8
    state: overridden
    entries:
      - key: "02:00:00:00:00:01"
        value: 1

- name: Reset the packet counter of slot 0 of your own program's per-CPU array
  xdpfleet.xdp.xdp_map:
    map: /sys/fs/bpf/myapp/stats
    state: replaced
    reset_counters: true
    entries:
      - key: 0
        value: 0

- name: Remove every entry of your own program's LPM trie
  xdpfleet.xdp.xdp_map:
    map: /sys/fs/bpf/myapp/deny_v4
    state: deleted
"""

RETURN = r"""
map:
  description: The map that was managed.
  returned: always
  type: dict
  contains:
    path:
      description: Its pin on the bpf filesystem.
      type: str
      sample: /sys/fs/bpf/myapp/deny_v4
    name:
      description: The kernel's name of the map.
      type: str
      sample: deny_v4
    id:
      description: The kernel's map id.
      type: int
      sample: 42
    type:
      description: The map type.
      type: str
      sample: lpm_trie
    key_size:
      description: Bytes per key.
      type: int
      sample: 8
    value_size:
      description: Bytes per value (per CPU for per-CPU maps).
      type: int
      sample: 4
    max_entries:
      description: The map's capacity.
      type: int
      sample: 1024
    per_cpu:
      description: Whether the map keeps a value per CPU.
      type: bool
      sample: false
    btf:
      description: Whether the map carries BTF type information.
      type: bool
      sample: true
before:
  description:
    - The entries before the task, as a list of C(key), C(value) (and C(per_cpu) with O(per_cpu=true)),
      sorted by the key's bytes.
  returned: unless O(state=gathered)
  type: list
  elements: dict
  sample: [{"key": "198.18.0.0/24", "value": 1}]
after:
  description: The entries after the task (in check mode, as they would be), like RV(before).
  returned: when changed
  type: list
  elements: dict
  sample: [{"key": "198.18.0.0/24", "value": 1}, {"key": "198.19.128.0/17", "value": 2}]
gathered:
  description: The entries of the map, sorted by the key's bytes.
  returned: when O(state=gathered)
  type: list
  elements: dict
  sample: [{"key": 0, "value": 1532, "per_cpu": [1500, 32]}]
  contains:
    key:
      description: The key, typed like O(entries[].key).
      type: raw
    value:
      description: The value, typed like O(entries[].value); for per-CPU maps the sum over every possible CPU.
      type: raw
    per_cpu:
      description: The value of each possible CPU, CPU 0 first.
      returned: with O(per_cpu=true) on a per-CPU map
      type: list
      elements: raw
summary:
  description: How many entries were (or in check mode would be) added, changed and removed.
  returned: unless O(state=gathered)
  type: dict
  contains:
    added:
      description: Entries written under a key that was absent.
      type: int
      sample: 1
    changed:
      description: Entries whose value was rewritten.
      type: int
      sample: 0
    removed:
      description: Entries deleted (zeroed for arrays).
      type: int
      sample: 0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _maps
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._resource import STATES

TYPES = ["u8", "u16", "u32", "u64", "ipv4", "ipv6", "cidr4", "cidr6", "mac", "hex"]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            map=dict(type="str", required=True),
            interface=dict(type="str"),
            pin_dir=dict(type="path"),
            entries=dict(type="list", elements="dict", options=dict(
                key=dict(type="raw", required=True, no_log=False),
                value=dict(type="raw"),
            )),
            state=dict(type="str", default="merged", choices=list(STATES)),
            key_type=dict(type="str", choices=TYPES, no_log=False),
            value_type=dict(type="str", choices=TYPES),
            reset_counters=dict(type="bool", default=False),
            per_cpu=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    try:
        result = _maps.manage(module.params, check_mode=module.check_mode, diff_mode=module._diff)
    except XdpfleetError as error:
        module.fail_json(msg=str(error))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
