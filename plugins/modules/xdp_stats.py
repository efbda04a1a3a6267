#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: xdp_stats
short_description: Gather the XDP firewall's counters and write them as a Prometheus textfile
version_added: 0.1.0
description:
  - Gathers the same facts as M(xdpfleet.xdp.xdp_facts) (without the per-CPU breakdown and the XDP modes
    of the interfaces) and returns them as C(ansible_facts.xdp) and RV(stats).
  - With O(textfile), also writes the counters in the Prometheus text exposition format for
    node_exporter's textfile collector, in the same run, so one module run per host does what
    gathering facts and templating a file would do in several.
  - The file is written only when its content differs, through a temporary file in the same directory
    renamed over it, so the collector never reads half a file. Its directory is created (mode C(0755))
    when missing.
  - The metrics carry the label C(interface). C(xdpfleet_program_attached) (gauge, labels C(owner),
    C(mode), C(tag), C(object_sha256)) for every interface, and for the xdpfleet firewall
    C(xdpfleet_rules) (gauge, label C(default_action)), C(xdpfleet_packets_total) and
    C(xdpfleet_bytes_total) (counters, label C(verdict)), C(xdpfleet_rule_hit_packets_total) and
    C(xdpfleet_rule_hit_bytes_total) (counters of every rule up to O(textfile_rules), labels C(rule) and
    C(action)).
  - A rule's C(rule) label is its name, or its text when it has none, never its position, so its series stays
    the same when rules are added, removed or moved around it; unnamed rules of the same text are one series.
    The rules after the first O(textfile_rules) (in rule-set order) are summed into one series per action,
    with the C(rule) label "(others)". The rate-limit metrics carry the same C(rule) label.
author:
  - xdpfleet developers (@xdpfleet)
extends_documentation_fragment:
  - xdpfleet.xdp.attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
    details: Reports whether the textfile would change and writes nothing.
  diff_mode:
    support: full
    details: The textfile's text before and after.
  facts:
    support: full
options:
  interfaces:
    description:
      - Interfaces to report. Defaults to every interface of the host except C(lo).
    type: list
    elements: str
  top_rules:
    description:
      - How many rules to report in C(top_rules) and in the textfile's rule hit metrics, those with the
        most hit packets first.
    type: int
    default: 10
  textfile_rules:
    description:
      - How many rules, in rule-set order, have hit counter series of their own in the textfile; the hits of
        the rules after them are summed by action into series with the C(rule) label "(others)".
      - Every rule is exported up to this cap, hit or not, so no series appears or vanishes as hit counts
        change. Each rule costs two series per interface in Prometheus.
    type: int
    default: 1000
  textfile:
    description:
      - Absolute path of the Prometheus textfile to write, ending in C(.prom) (the textfile collector
        reads only those).
      - Omitted, no file is written and the module only gathers.
    type: path
  mode:
    description:
      - Permissions of the textfile, as an octal string such as V('0644').
      - Set also when only the mode of an existing file with the same content differs.
    type: raw
    default: "0644"
seealso:
  - module: xdpfleet.xdp.xdp_facts
  - name: node_exporter textfile collector
    description: How node_exporter exposes the metrics of C(*.prom) files.
    link: https://github.com/prometheus/node_exporter#textfile-collector
"""

EXAMPLES = r"""
- name: Gather the firewall counters and write them for node_exporter
  xdpfleet.xdp.xdp_stats:
    textfile: /var/lib/node_exporter/textfile_collector/xdpfleet.prom

- name: Gather eth0's counters with the 5 most hit rules, without writing a file
  xdpfleet.xdp.xdp_stats:
    interfaces: [eth0]
    top_rules: 5
  register: xdp_counters

- name: Show how many packets eth0's filter dropped
  ansible.builtin.debug:
    msg: "{{ xdp_counters.stats.interfaces.eth0.stats.drop.packets | default(0) }} packets dropped"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host, as M(xdpfleet.xdp.xdp_facts) returns them.
  returned: always
  type: dict
  contains:
    xdp:
      description:
        - C(capabilities) and C(interfaces) of the host, as in M(xdpfleet.xdp.xdp_facts) with O(xdpfleet.xdp.xdp_facts#module:per_cpu=false)
          and O(xdpfleet.xdp.xdp_facts#module:xdp_modes=false) (C(xdp_modes) is C(null)).
      type: dict
      sample: {"capabilities": {"kernel": "6.18.44", "btf": true}, "interfaces": {"eth0": {"attached": false}}}
stats:
  description: The same data as C(ansible_facts.xdp), for a registered result.
  returned: always
  type: dict
  sample: {"capabilities": {"kernel": "6.18.44", "btf": true}, "interfaces": {"eth0": {"attached": false}}}
textfile:
  description: Path of the textfile, or C(null) when O(textfile) was not given.
  returned: always
  type: str
  sample: /var/lib/node_exporter/textfile_collector/xdpfleet.prom
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _facts, _prometheus
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError


def write_textfile(path, mode, facts, check_mode):
    """(changed, diff) of bringing the textfile to the rendered metrics."""
    text = _prometheus.render(facts["interfaces"])
    changed, before = _prometheus.update_textfile(path, text, mode, check_mode)
    return changed, {"before": before or "", "after": text, "before_header": path, "after_header": path}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interfaces=dict(type="list", elements="str"),
            top_rules=dict(type="int", default=10),
            textfile_rules=dict(type="int", default=1000),
            textfile=dict(type="path"),
            mode=dict(type="raw", default="0644"),
        ),
        supports_check_mode=True,
    )
    path, changed, diff = module.params["textfile"], False, None
    try:
        mode = _prometheus.file_mode(module.params["mode"])
        if path:
            _prometheus.check_path(path)
        facts = _facts.gather(module.params["interfaces"], top=module.params["top_rules"], modes=False,
                              series=module.params["textfile_rules"] if path else None)
        if path:
            changed, diff = write_textfile(path, mode, facts, module.check_mode)
        for interface in facts["interfaces"].values():
            interface.pop("rule_counters", None)  # the textfile's, too many to return as facts
    except XdpfleetError as error:
        module.fail_json(msg=str(error))
    result = dict(changed=changed, ansible_facts={"xdp": facts}, stats=facts, textfile=path)
    if module._diff and diff is not None:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
