#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: xdp_drops
short_description: Read the drops the xdpfleet firewall sampled
version_added: 0.1.0
description:
  - Reads the sampled drop events of the xdpfleet firewall attached to O(interface) from its ring buffer
    (the C(xf_events) map, found through the attached program, so pins are not needed), for up to
    O(timeout) seconds or until O(count) events were read.
  - The firewall samples one drop in C(sample_rate) (see the C(sampling) option of
    M(xdpfleet.xdp.xdp_rules)); with sampling off no events arrive.
  - Events wait in the ring buffer until read, so the events sampled before the task are returned too.
    Reading consumes them, as the ring buffer keeps one read position for all its readers; the next read,
    by this module or any other reader of the map, returns newer events only. So the module reports
    C(changed=true) when it returned (and so consumed) events, and C(changed=false) when there were none.
  - With O(count), the events after the first O(count) stay in the ring buffer for the next read.
author:
  - xdpfleet developers (@xdpfleet)
extends_documentation_fragment:
  - xdpfleet.xdp.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the module returns the events a read would return, waiting as a read would, but
        leaves them in the ring buffer (it reads them through read-only mappings of the ring and does not
        move its read position); C(changed) says whether a read would have consumed events.
  diff_mode:
    support: none
    details: The events are the result; there is nothing to compare before and after.
options:
  interface:
    description: Interface whose firewall's sampled drops are read.
    type: str
    required: true
  timeout:
    description: Seconds to wait for events.
    type: float
    default: 1.0
  count:
    description: Return as soon as this many events were read; V(0) reads until O(timeout).
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Read up to 20 sampled drops of eth0, waiting at most 5 seconds
  xdpfleet.xdp.xdp_drops:
    interface: eth0
    count: 20
    timeout: 5
  register: drops

- name: Show who was dropped
  ansible.builtin.debug:
    msg: "{{ drops.events | map(attribute='source') | unique | list }}"
"""

RETURN = r"""
events:
  description:
    - The sampled drops, oldest first, taken out of the ring buffer (C(changed=true) when there are any).
    - In check mode, the events a read would take; they stay in the ring buffer.
  returned: always
  type: list
  elements: dict
  contains:
    time:
      description: Time of the drop, seconds since the epoch.
      type: float
    timestamp_ns:
      description: Kernel monotonic clock of the drop (C(bpf_ktime_get_ns)).
      type: int
    interface:
      description: Interface the packet arrived on.
      type: str
    source:
      description: Source address (null for packets that were not IP).
      type: str
    destination:
      description: Destination address.
      type: str
    protocol:
      description: tcp, udp, icmp, icmpv6, or the protocol number.
      type: raw
    source_port:
      description: TCP/UDP source port, 0 without ports.
      type: int
    destination_port:
      description: TCP/UDP destination port, 0 without ports.
      type: int
    action:
      description: The verdict, C(drop).
      type: str
    reason:
      description: C(drop) (a rule or the default action) or C(malformed).
      type: str
    shadow:
      description:
        - True for a drop the shadow set would have made (M(xdpfleet.xdp.xdp_rules) O(xdpfleet.xdp.xdp_rules#module:mode=shadow)); the
          enforced set decided that packet. Its C(rule_id), C(rule_name) and C(rule) are those of the shadow set.
      type: bool
    rule_id:
      description: Position of the rule that dropped the packet, from 1; null for the default action.
      type: int
    rule_name:
      description: The rule's name from the desired state in C(/etc/xdpfleet), when known.
      type: str
    rule:
      description: The rule as text.
      type: str
  sample:
    - time: 1767225600.123456
      timestamp_ns: 91234567890
      interface: eth0
      source: 198.18.0.2
      destination: 198.18.0.11
      protocol: udp
      source_port: 40000
      destination_port: 9999
      action: drop
      reason: drop
      shadow: false
      rule_id: 1
      rule_name: no-udp-9999
      rule: drop udp from any to any port 9999
sample_rate:
  description: One drop in this many is sampled; 0 means sampling is off.
  returned: always
  type: int
  sample: 1
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _drops
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", required=True),
            timeout=dict(type="float", default=1.0),
            count=dict(type="int", default=0),
        ),
        supports_check_mode=True,
    )
    if module.params["timeout"] < 0 or module.params["count"] < 0:
        module.fail_json(msg="timeout and count must not be negative")
    try:
        result = _drops.read_drops(module.params["interface"], module.params["timeout"], module.params["count"],
                                   consume=not module.check_mode)
    except XdpfleetError as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=bool(result["events"]), **result)


if __name__ == "__main__":
    main()
