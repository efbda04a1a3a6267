#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: xdp_facts
short_description: Gather XDP programs, firewall counters and BPF capabilities as facts
version_added: 0.1.0
description:
  - Returns C(ansible_facts.xdp) with, per interface, the attached XDP program (id, name, tag, mode, owner,
    object hash, maps) and, for the xdpfleet firewall, its rule count, default action, packets and bytes per
    XDP action and the rules with the most hits; plus the host's kernel capabilities.
  - Everything is read from the kernel (the program attached to the interface and the maps it uses, by id),
    so the facts are complete when the pin directory or C(/etc/xdpfleet) are gone. Rule names come from
    C(/etc/xdpfleet/<interface>.json) when that file describes the active rule set.
  - Counters are summed over every possible CPU (C(libbpf_num_possible_cpus)), not only the online ones.
  - A host with nothing attached gives RV(ansible_facts.xdp.interfaces) entries with C(attached=false), not an error.
  - Never changes anything. Can be listed in C(facts_modules) in C(ansible.cfg) (after C(ansible.builtin.setup))
    so that ordinary fact gathering includes it.
author:
  - xdpfleet developers (@xdpfleet)
extends_documentation_fragment:
  - xdpfleet.xdp.attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
options:
  interfaces:
    description:
      - Interfaces to report. Defaults to every interface of the host except C(lo).
    type: list
    elements: str
  per_cpu:
    description:
      - Add each action's per-CPU breakdown (C(per_cpu) list) to the summed counters.
    type: bool
    default: false
  top_rules:
    description:
      - How many rules to report in C(top_rules), those with the most hit packets first.
    type: int
    default: 10
  xdp_modes:
    description:
      - Report which XDP attach modes each interface takes, from the kernel's netdev generic netlink
        family (Linux 6.3 and later; C(null) on older kernels).
      - Needs the pyroute2 library, whose import is most of the time a gathering takes (docs/PERFORMANCE.md);
        set V(false) where fact gathering must be fast.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Gather XDP facts of every interface
  xdpfleet.xdp.xdp_facts:

- name: Gather eth0's counters with the per-CPU breakdown and the top 5 rules
  xdpfleet.xdp.xdp_facts:
    interfaces: [eth0]
    per_cpu: true
    top_rules: 5

- name: Show how many packets eth0's filter dropped
  ansible.builtin.debug:
    msg: "{{ ansible_facts.xdp.interfaces.eth0.stats.drop.packets | default(0) }} packets dropped"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    xdp:
      description: XDP facts of the host.
      type: dict
      contains:
        capabilities:
          description:
            - C(kernel) release, C(btf) (kernel BTF present), C(jit_enabled), C(bpffs_mounted),
              C(possible_cpus) and C(online_cpus).
            - C(jit_enabled) is the C(net.core.bpf_jit_enable) setting. That setting exists in the initial
              network namespace only; in another one (a container) C(jit_enabled) is true when a program
              attached to one of the gathered interfaces was JIT-compiled, and null (not known) otherwise.
          type: dict
          sample: {"kernel": "6.18.44", "btf": true, "jit_enabled": true, "bpffs_mounted": true,
                   "possible_cpus": 2, "online_cpus": 2}
        interfaces:
          description:
            - One entry per interface, keyed by name, with C(attached), C(prog_id), C(name), C(tag), C(mode)
              (native, skb, hw), C(owner) (xdpfleet or foreign), C(object_sha256), C(program), C(pin_dir),
              C(map_schema_version) (of the maps, as recorded at attach), C(maps) (list of C(name) and C(id))
              and C(xdp_modes) (modes the interface takes). These describe the program attached to the hook.
            - C(hook) lists every program on the hook, with C(mechanism) (V(exclusive) for one program, V(chained)
              for the xdpfleet firewall and the program in its next-program slot, V(dispatcher) for libxdp's
              dispatcher and the programs it runs, see O(xdpfleet.xdp.xdp_program#module:hook)) and C(programs) in
              the order a packet meets them, each with C(position) (from 0), C(place) (V(root), attached to the
              hook; V(chained); V(dispatcher), libxdp's dispatcher; V(dispatched), a program it runs), C(prog_id),
              C(name), C(tag), C(owner), C(program), C(object_sha256), and for a dispatched program its
              C(priority) and C(chain_call_actions) (null otherwise). Null and empty with nothing attached.
            - C(counted_by) names the program on the hook whose counters the firewall figures below are
              (C(position), C(place), C(prog_id), C(name)); null without the firewall.
            - For the xdpfleet firewall (C(firewall=true)) also C(rule_count), C(default_action),
              C(sample_rate), C(active_slot), C(stats) (per reason C(aborted), C(drop), C(pass), C(tx),
              C(redirect), C(malformed) the C(packets) and C(bytes), and C(per_cpu) on request),
              C(rule_drops) and C(default_action_drops) (the packets of the C(drop) verdict that rules dropped, by a
              drop rule or over a rate limit, and that the default action dropped; malformed packets are apart, in
              C(stats)), C(top_rules) (C(position) from 1, C(name), C(rule), C(action), C(counter), C(packets), C(bytes)),
              C(rate_limits) (for each rate-limit rule C(position), C(name), C(rule), C(passed) and C(limited), each
              with C(packets) and C(bytes), and C(sources), the sources or prefixes it keeps a bucket for),
              C(expiring_rules) (for each rule with a deadline C(position), C(name), C(rule), C(expires_at) and
              C(seconds_left), 0 once it has passed) and C(sets) (the entries of each address set the rules
              name, by set name).
            - For every interface C(revert), the revert of unconfirmed xdp_rules changes (see
              O(xdpfleet.xdp.xdp_rules#module:confirm_within)) as RV(xdpfleet.xdp.xdp_rules#module:revert) shows it,
              with C(armed), C(deadline) (epoch seconds), C(seconds_left), C(timer) and whether it runs, and in
              C(reverted) when and why the last one fired.
            - For every interface C(monitor), the counters of the XDP health monitor (the firewall role's
              C(xdp_monitor), see docs/TRACING.md) for the interface, null where the monitor is not deployed
              C(exceptions) (C(prog_id), C(program), C(action), C(packets)), C(redirect_errors) (C(prog_id),
              C(program), C(error), C(packets)) and C(drops), the packets the kernel dropped after XDP
              (C(reason), C(packets)).
          type: dict
          sample:
            eth0:
              attached: true
              prog_id: 412
              name: xdp_firewall
              tag: 3b185187f1855c4c
              mode: native
              owner: xdpfleet
              object_sha256: 9f2c0e5d8a8b4e7f1c3a6b2d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f
              program: xdp_firewall
              pin_dir: /sys/fs/bpf/xdpfleet/eth0
              map_schema_version: 1
              maps: [{"name": "xf_stats", "id": 77}]
              xdp_modes: [native, skb]
              hook: {"mechanism": "chained", "programs": [
                       {"position": 0, "place": "root", "prog_id": 412, "name": "xdp_firewall", "tag": "3b185187f1855c4c",
                        "owner": "xdpfleet", "program": "xdp_firewall", "object_sha256": "9f2c0e5d8a8b4e7f1c3a6b2d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f",
                        "priority": null, "chain_call_actions": null},
                       {"position": 1, "place": "chained", "prog_id": 415, "name": "xt_filter", "tag": "77aa01b2c3d4e5f6",
                        "owner": "xdpfleet", "program": "xt_filter", "object_sha256": "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12",
                        "priority": null, "chain_call_actions": null}]}
              counted_by: {"position": 0, "place": "root", "prog_id": 412, "name": "xdp_firewall"}
              firewall: true
              rule_count: 2
              default_action: pass
              sample_rate: 0
              active_slot: 1
              stats: {"drop": {"packets": 50, "bytes": 4900}, "pass": {"packets": 12, "bytes": 1140}}
              rule_drops: 50
              default_action_drops: 0
              top_rules: [{"position": 1, "name": "no-ping", "rule": "drop icmp from 198.18.0.2/32 to any",
                           "action": "drop", "counter": 0, "packets": 50, "bytes": 4900}]
              rate_limits: [{"position": 2, "name": "syn-flood", "sources": 31,
                             "rule": "rate_limit tcp from any to any tcp_flags syn,!ack (50 pps burst 100 per source /32)",
                             "passed": {"packets": 1500, "bytes": 90000}, "limited": {"packets": 98500, "bytes": 5910000}}]
              expiring_rules: [{"position": 1, "name": "block-scanner", "rule": "drop ip from 198.18.7.0/24 to any",
                                "expires_at": "2026-12-05T18:00:00Z", "seconds_left": 3480}]
              shadow: {"rule_count": 3, "default_action": "pass", "installed_at": 1796480000.5, "packets": 1000,
                       "would_drop": 120, "would_drop_percent": 12.0, "new_drops": {"packets": 70, "bytes": 4200},
                       "new_drops_percent": 7.0, "new_passes": {"packets": 0, "bytes": 0}, "new_passes_percent": 0.0,
                       "stats": {"drop": {"packets": 120, "bytes": 7200}, "pass": {"packets": 880, "bytes": 52800}},
                       "top_rules": []}
              revert: {"armed": true, "armed_at": 1796400000.25, "deadline": 1796400120.25, "seconds_left": 119.8,
                       "confirm_within": 120, "timer": "process 4711", "timer_running": true, "failed": null,
                       "reverted": null}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _facts
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interfaces=dict(type="list", elements="str"),
            per_cpu=dict(type="bool", default=False),
            top_rules=dict(type="int", default=10),
            xdp_modes=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    try:
        facts = _facts.gather(module.params["interfaces"], module.params["per_cpu"],
                              module.params["top_rules"], module.params["xdp_modes"])
    except XdpfleetError as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=False, ansible_facts={"xdp": facts})


if __name__ == "__main__":
    main()
