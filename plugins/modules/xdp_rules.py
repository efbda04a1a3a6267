#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: xdp_rules
short_description: Manage the ordered rule set of the xdpfleet XDP firewall on an interface
version_added: 0.1.0
description:
  - Resource module for the rules of the firewall that M(xdpfleet.xdp.xdp_program) attached to O(interface).
    Rules are ordered; the first rule that matches a packet decides, the default action decides the rest
    (see C(docs/RULES.md)).
  - B(Rule identity.) Across runs a rule is identified by its C(name) when it has one, otherwise by
    its match fields C(source), C(destination), C(protocol), C(port), C(source_set) and C(destination_set)
    (in canonical form, so C(22) and C("22-22") or C(TCP) and C(tcp) are the same). The action is never part
    of the identity, it is the value. Two rules of one set may not share an identity.
  - O(state=merged) updates the rules of O(config) that exist (the fields given win, fields left out keep their
    value; the rule keeps its position) and inserts the others. A new rule is inserted right after the rule
    that precedes it in O(config); a new rule at the head of O(config) goes right before the first rule of
    O(config) that already exists, or at the end of the set when none exists. So listing an existing rule
    after a new one places the new rule in front of it.
  - O(state=replaced) is V(merged), except that an existing rule named in O(config) is replaced as a whole
    (fields left out are removed).
  - O(state=overridden) makes the rule set exactly O(config), in its order.
  - O(state=deleted) removes the rules of O(config), matched by identity only (their action may be left out);
    without O(config) it removes every rule.
  - O(state=gathered) returns the current rules in RV(gathered) and changes nothing.
  - A change is atomic for packets. The new set is written with batch map operations into the program's
    inactive rule-set slot and then one index in its config map is switched, so each packet is classified
    entirely by the old set or entirely by the new one. Rules kept from the old set keep their hit counters.
    A change that keeps every rule's match and position (only actions, or only the default action, change)
    writes only the rules that change.
  - The current rules are read from the kernel. The desired state (rules with their names, default action,
    sampling) is written atomically to C(/etc/xdpfleet/<interface>.json) after every change, so that it can be
    restored after a reboot; names come from that file as long as the kernel still holds what it describes.
  - B(Large rule sets.) With more than 1000 rules before or after the task, RV(before) and RV(after) are left out
    of the result unless O(return_rules=true), because Ansible's handling of a result with 100,000 rules takes seconds.
    RV(summary), RV(rule_count) and, in diff mode, the lines of the rules that change are always returned;
    RV(gathered) is always complete.
  - B(Address sets.) A rule may match C(source_set) or C(destination_set), the name of a set of O(sets), instead
    of one CIDR. A set is many prefixes (IPv4 and IPv6 mixed) sharing one rule, its position and its hit counter,
    looked up through the same prefix maps as single addresses (no cost per packet beyond theirs). Prefixes that
    another prefix of the same set covers are dropped; overlaps between sets and rules follow the rule order.
    A set comes from a list in the task or from a file on the controller (a blocklist of one address or CIDR per
    line, where C(#) and C(;) start comments; or a JSON or YAML list).
  - B(Content addressing.) The action plugin reads O(rules_file) and set files on the controller (each distinct
    file once, cached by path, size and modification time) and first sends the host only the digest of the
    whole request. A host that applied exactly that request last, and whose kernel still holds its result,
    answers C(changed=false) at once; only the others get the content, the sets compressed. So an unchanged run
    costs about what a ping does, whatever the size of the rules and sets.
  - B(Speed.) A run whose O(config) is exactly the canonical rule list stored in the desired-state file (and the
    kernel still holds that rule set) is recognised by comparing digests, without looking at single rules. Items
    already in canonical form (as RV(before) shows them) are checked without building address objects.
  - B(Check mode before the firewall is attached.) In check mode, on an interface whose firewall maps are not
    pinned in O(pin_dir), the rules are validated and the result is predicted against what attaching the firewall
    with M(xdpfleet.xdp.xdp_program) gives (no rules, default action V(pass), sampling off), so that a check-mode
    play that attaches the firewall and then applies rules reports both. Outside check mode that is an error.
  - B(Confirmed changes.) With O(confirm_within=N), a task that changes the rule set or settings also arms, on the
    host, a revert to the rule set, sets and settings before it, which fires N seconds later unless a later task
    confirms the change (O(confirm=true) on an xdp_rules task of the interface, or O(state=confirmed)). The host
    reverts by itself, without the controller, through a transient systemd timer (C(xdpfleet-revert-<interface>-*))
    where systemd runs, else a process of its own session in the host's namespaces; either survives the module's exit and
    the loss of the SSH session. The revert is a rule-set switch like any other (atomic for packets), ignores the
    lockout guard, and fires only while it is armed, so it is idempotent and a confirmed change stays.
  - A further change with O(confirm_within) while a revert is armed keeps what that revert goes back to (the state
    at the last confirmation) and moves the deadline to N seconds from then, also when it changes no rules; a
    change without O(confirm_within) leaves the armed revert as it is. If the host restarts before the change is
    confirmed, the boot-time restore of the firewall role applies the previous rule set instead of the new one.
  - After a revert has fired, a confirmation fails saying when and why, until a change with O(confirm_within) arms a
    new one. RV(revert) and the C(revert) entry of M(xdpfleet.xdp.xdp_facts) show an armed revert and its deadline,
    and the last revert that fired. The record is C(/etc/xdpfleet/<interface>.confirm.json), the state to go back to
    C(/etc/xdpfleet/<interface>.revert.json).
  - B(Lockout guard.) When the task runs over SSH (C(SSH_CONNECTION) on the host), the resulting rule set is
    evaluated, in rule order, on the packet the SSH client sends to the host (TCP from the
    client address and port to the server address and port). If that packet would be dropped the module
    fails, naming the rule (or the default action) that drops it, unless O(allow_lockout=true). The check
    does not know which interface the session enters by, so it also guards interfaces the session does not
    use; set O(allow_lockout) for those.
author:
  - xdpfleet developers (@xdpfleet)
extends_documentation_fragment:
  - xdpfleet.xdp.attributes
  - xdpfleet.xdp.attributes.interface
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff lists the rules that are added (V(+)), removed (V(-)), changed (V(-) then V(+)) or moved (V(~)),
        one line each, such as C(+ drop tcp from any to 198.18.0.0/24 port 22 (ssh) (at 3)); for each set that
        changes, a count line and the entries added (V(+)) and removed (V(-)), up to 20 each.
options:
  config:
    description:
      - The ordered rules, a list of dicts. The module validates them itself (Ansible's argument checks are too
        slow for 100,000 rules), as a whole; every problem is reported with its position, field and fix.
      - The action plugin hands the list to the host as one JSON text, which the module also accepts directly.
      - Each rule has these keys; all but C(action) are optional, and a key left out matches anything.
      - C(name) (str) a name (comment) for the rule. When given, it is the rule's identity across runs.
      - C(action) (V(drop), V(pass) or V(rate_limit)) what to do with a matching packet. Required except with
        O(state=deleted). A V(rate_limit) rule lets the packets within its limit go on to the rules after it (the
        next match decides, else the default action) and drops those over it, counted as its hits.
      - C(source) (str) source address or CIDR, IPv4 or IPv6, without host bits set (V(198.18.0.0/15),
        V(2001:db8::/32)).
      - C(destination) (str) destination address or CIDR, of the same family as C(source) when both are given.
      - C(protocol) (str or int) V(tcp), V(udp), V(icmp), V(icmpv6), or an IP protocol number.
      - C(port) (int or str) destination port (tcp/udp), a number or an inclusive range V(low-high).
      - C(source_set) (str) the name of a set of O(sets) the source address must be in; instead of C(source).
      - C(destination_set) (str) the same for the destination; instead of C(destination), and only in a rule
        without a source (a rule with a source is looked up by it).
      - C(source_port) (int or str) source port (tcp/udp), V(0-65535) or a range V(low-high); a non-first fragment
        never matches it.
      - C(tcp_flags) (str) TCP flags that must be set, and with V(!) clear, comma-separated from V(fin), V(syn),
        V(rst), V(psh), V(ack), V(urg), V(ece), V(cwr) (V(syn,!ack) matches a connection's first packet); only
        with C(protocol=tcp).
      - C(icmp_type) (int) ICMP type V(0-255), with C(protocol) V(icmp) or V(icmpv6); not the ICMPv6 neighbour
        discovery types V(133-137), which always pass. C(icmp_code) (int) V(0-255) needs C(icmp_type).
      - C(length) (int or str) IP total length (IPv6 payload length + 40), a number or a range, V(0-65535).
      - C(ttl) (int or str) IPv4 TTL or IPv6 hop limit, a number or a range, V(0-255).
      - C(pps) (int, V(1) to 10^9) packets per second, and/or C(bps) (int, V(8) to 10^12) bits per second of the
        Ethernet frame,
        that a V(rate_limit) rule lets through; one of them is required, and both are only for V(rate_limit).
      - C(burst) (int, packets, at least V(1); default a tenth of C(pps)) only with C(pps); C(burst_bytes) (int,
        at least V(1514); default a tenth of a second at C(bps)) only with C(bps); at most an hour of the rate.
      - C(per) (V(source) or V(rule), default V(source)) one bucket per source address (IPv4 by C(per_prefix),
        default V(32); IPv6 by C(per_prefix6), default V(64)), or one bucket for all the rule's packets. The
        prefixes only with V(source).
      - C(expires_at) (str) an RFC 3339 time with an offset, in the future (V("2026-12-05T18:00:00Z"), quoted in
        YAML), or C(expires_after) (int) seconds from the run that applies the rule; not both. The data plane
        stops matching the rule at its deadline; the next run removes it and returns it in RV(expired). Running
        a task again keeps the deadline an installed rule with the same identity still has.
      - The canonical form of a rule (in RV(before), RV(after) and the stored state) shows C(expires_at) in UTC
        and the defaults of a rate limit.
      - Mutually exclusive with O(rules_file).
    type: raw
  rules_file:
    description:
      - A file on the controller holding O(config) as a YAML or JSON list (chosen by extension, or by
        O(rules_file_format)). A relative path is looked up as the C(src) of M(ansible.builtin.copy) is (the
        role's or the playbook's C(files/) directory first).
      - Read by the action plugin with PyYAML's C loader or json, not through Ansible's templating.
    type: path
  rules_file_format:
    description:
      - The format of O(rules_file) when its extension does not say it.
    type: str
    choices: [json, yaml]
  sets:
    description:
      - Address sets by name (letters, digits, C(_), C(.), C(-)), for the C(source_set) and C(destination_set) of
        rules. Each is a list of addresses and CIDRs, or a dict with C(file), a file on the controller (looked up
        as O(rules_file) is), and optionally C(format) (V(text), V(json) or V(yaml); by default V(json) for
        C(.json), V(yaml) for C(.yml) and C(.yaml), else V(text)).
      - "A bad entry fails the task before anything on the host changes, naming the file (or set) and line (or
        item) and the fix, such as C(drop.txt line 1204: 198.18.0.5/24 has host bits set (did you mean
        198.18.0.0/24?))."
      - With O(state=merged) or O(state=replaced), sets given replace the stored sets of the same name and the
        others are kept; with O(state=overridden) only the sets given exist. A set no rule names is not kept.
    type: dict
  revert_to:
    description:
      - Make the rule set, sets and settings those of an earlier request again, named by its digest as
        RV(request_digest) of a V(gathered) result gives it; the host keeps the current and the previous request
        it applied (in C(/etc/xdpfleet/<interface>.previous.json)), so a rollout can revert a batch without
        sending a large rule set or set back. Fails, changing nothing, when the host holds neither.
      - Implies O(state=overridden); O(config) and O(sets) are not used.
    type: str
  content_digest:
    description:
      - Set by the action plugin, not by a task; the digest of the whole request, which the host compares with
        the digest of the request it applied last.
    type: str
  state:
    description:
      - How O(config) is applied; see the description for each state.
      - V(confirmed) changes no rules; it confirms the change whose revert O(confirm_within) armed (see O(confirm)).
    type: str
    choices: [merged, replaced, overridden, deleted, gathered, confirmed]
    default: merged
  mode:
    description:
      - V(enforce) applies the change to the rule set that decides every packet.
      - V(shadow) installs the rule set the change makes of the enforced one beside it as a shadow set (replacing
        an earlier shadow set). The enforced set goes on deciding every packet; the shadow set classifies the
        same packets and counts, per rule and per action, what it would have done, and sends its would-be drops
        to the event ring (marked as shadow) at the sampling rate. RV(before) and the diff compare it with the
        enforced set. M(xdpfleet.xdp.xdp_facts) reports its counters beside the enforced ones. A shadow rate
        limit lets every packet go on to the rules after it (it charges no bucket).
      - V(promote) makes the installed shadow set the enforced one by switching one word of the program's config
        map, so that a packet sees one set or the other, and ends the shadow. The lockout guard checks it as any
        change. Nothing changes when no shadow set is installed.
      - V(discard) removes the shadow set; the enforced set stays as it is.
      - A change applied with V(enforce) while a shadow set is installed discards the shadow set (it needs the
        slot), and says so in RV(shadow_discarded).
      - V(promote) and V(discard) take no O(config), O(sets) or O(rules_file); V(shadow) takes every O(state)
        but V(gathered).
      - Shadow sets need the firewall object of this collection compiled with clang. The bcc build leaves them
        out, because bcc inlines every function and a second classification would pass the verifier's limit.
    type: str
    choices: [enforce, shadow, promote, discard]
    default: enforce
  confirm_within:
    description:
      - Seconds (a positive whole number) within which a later task must confirm this task's change; otherwise the
        host reverts it by itself. See B(Confirmed changes) in the description.
      - Arms a revert only when the task changes something (or moves the deadline of one already armed); with
        O(mode=enforce) or O(mode=promote), not with O(state=gathered) or O(state=confirmed), nor with O(confirm).
        In check mode RV(revert) shows what would be armed.
    type: int
  confirm:
    description:
      - Confirm the change whose revert is armed on O(interface), after this task's own change if it makes one;
        the revert is removed and its timer stopped. C(changed) when a revert was armed; nothing to do when none is.
      - Fails, naming when and why, when the revert has fired already. Not with O(mode=shadow) or O(mode=discard),
        which leave the enforced rules as they are.
    type: bool
    default: false
  default_action:
    description:
      - Verdict for packets no rule matches. ARP and IPv6 neighbour discovery always pass.
      - Left out, the current default action is kept (V(pass) on a fresh program).
    type: str
    choices: [drop, pass]
  sampling:
    description:
      - Send 1 in N dropped packets to the program's event ring buffer; V(0) turns sampling off.
      - Left out, the current rate is kept.
    type: int
  allow_lockout:
    description:
      - Apply a rule set even though it would drop the SSH connection the task runs over.
    type: bool
    default: false
  return_rules:
    description:
      - Return RV(before) and RV(after) however many rules they hold (by default only up to 1000 rules).
    type: bool
    default: false
notes:
  - Needs root, libbpf.so.1 on the host and the firewall attached by M(xdpfleet.xdp.xdp_program) with its maps
    pinned in O(pin_dir).
  - O(config) is validated by the module itself rather than by Ansible's argument spec, which is too slow for
    lists of 100,000 rules; for the same reason it travels to the host as one JSON text (Ansible copies the
    arguments on the host, which costs nothing for a text), and it is neither logged on the host nor part of
    the C(invocation) returned at high verbosity.
requirements:
  - libbpf >= 1.0 on the managed host
seealso:
  - module: xdpfleet.xdp.xdp_program
  - module: xdpfleet.xdp.xdp_map
"""

EXAMPLES = r"""
- name: Drop every source of a blocklist file (one prefix per line) and keep SSH open
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    state: overridden
    sets:
      blocklist:
        file: /etc/ansible/files/drop.txt
    config:
      - name: ssh
        action: pass
        protocol: tcp
        port: 22
      - name: blocklist
        action: drop
        source_set: blocklist

- name: Protect a set of servers from UDP, the rules kept in a YAML file beside the playbook
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    state: overridden
    rules_file: rules/edge.yml
    sets:
      servers: [198.18.0.10, 198.18.0.11, 2001:db8::10]
- name: Block a network and SSH from everywhere else, keeping other rules
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    config:
      - name: admins
        action: pass
        source: 198.18.0.0/24
        protocol: tcp
        port: 22
      - action: drop
        protocol: tcp
        port: 22
      - action: drop
        source: 198.19.128.0/17

- name: The rule set is exactly this, default deny, sample 1 in 100 drops
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    state: overridden
    default_action: drop
    sampling: 100
    config:
      - action: pass
        protocol: tcp
        port: 80-443
      - action: pass
        protocol: icmp

- name: Remove one named rule and one by its match
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    state: deleted
    config:
      - name: admins
      - source: 198.19.128.0/17

- name: Read the rules
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    state: gathered
  register: firewall

- name: Try a new rule set in shadow first; the enforced set keeps deciding
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    mode: shadow
    state: overridden
    rules_file: rules/edge.yml

- name: Enforce the shadow set once its counters look right
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    mode: promote

- name: Default deny, reverted by the host itself unless confirmed within 2 minutes
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    state: overridden
    default_action: drop
    confirm_within: 120
    config:
      - name: ssh
        action: pass
        protocol: tcp
        port: 22

- name: The host still answers over SSH (a new connection), so the change is confirmed
  xdpfleet.xdp.xdp_rules:
    interface: eth0
    state: confirmed
"""

RETURN = r"""
interface:
  description: The interface.
  returned: always
  type: str
  sample: eth0
before:
  description: The rules before the task, in order, in canonical form.
  returned: when neither list holds more than 1000 rules, or with O(return_rules=true)
  type: list
  elements: dict
  sample: [{"name": "admins", "action": "pass", "source": "198.18.0.0/24", "protocol": "tcp", "port": 22}]
after:
  description: The rules after the task (predicted in check mode).
  returned: when changed, and neither list holds more than 1000 rules or with O(return_rules=true)
  type: list
  elements: dict
  sample: [{"action": "drop", "source": "198.19.128.0/17"}]
gathered:
  description: The current rules, with O(state=gathered).
  returned: when O(state=gathered)
  type: list
  elements: dict
  sample: [{"action": "drop", "source": "198.19.128.0/17"}]
rule_count:
  description: The number of rules before and after the task.
  returned: always
  type: dict
  sample: {"before": 100000, "after": 100000}
sets:
  description:
    - Per set that a rule names after the task, its number of entries (after overlaps are dropped) and how many
      entries the task added and removed.
  returned: always
  type: dict
  sample: {"blocklist": {"entries": 100000, "added": 1000, "removed": 1000}}
request_digest:
  description:
    - With O(state=gathered), the digest of the request whose result the kernel holds (for O(revert_to)); null when
      the rules were not applied by this collection's action plugin or the kernel no longer holds them.
  returned: when O(state=gathered)
  type: str
  sample: 6f1ed002ab5595859014ebf0951522d9c3a2b0a4d1f3b0f1c6e0b1d2e3f4a5b6
summary:
  description:
    - Counts of rules added, removed and changed (fields changed or moved relative to the other kept rules).
  returned: always
  type: dict
  sample: {"added": 2, "removed": 1, "changed": 0}
expired:
  description:
    - The rules (in canonical form, with their names) whose deadline had passed, which the task removed (or, in
      check mode, would remove). Diff mode shows them as removed lines.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "block-scanner", "action": "drop", "source": "198.19.7.0/24", "expires_at": "2026-12-05T18:00:00Z"}]
default_action:
  description: The default action after the task.
  returned: always
  type: str
  sample: pass
sampling:
  description: The drop sampling rate after the task (1 in N, 0 off).
  returned: always
  type: int
  sample: 0
mode:
  description: The O(mode) of a task that is not V(enforce).
  returned: when O(mode) is V(shadow), V(promote) or V(discard)
  type: str
  sample: shadow
shadow_discarded:
  description: With O(mode=enforce), true when the change discarded an installed shadow set.
  returned: when O(mode=enforce) and O(state) is not V(gathered)
  type: bool
  sample: false
revert:
  description:
    - The revert of unconfirmed changes on the interface after the task (predicted in check mode).
    - C(armed), and when it is C(armed_at), C(deadline) (epoch seconds), C(seconds_left), C(confirm_within),
      C(timer) (C(systemd timer <unit>.timer) or C(process <pid>)), C(timer_running) and C(failed) (when and why
      it could not fire, else null).
    - C(reverted), the last revert that fired on the interface (kept until another fires), with C(at), C(by)
      (V(timer), or V(boot) when the host restarted unconfirmed), C(armed_at), C(deadline) and C(confirm_within);
      null when none has.
    - C(confirmed), true when this task confirmed an armed revert.
  returned: always
  type: dict
  sample: {"armed": true, "armed_at": 1796400000.25, "deadline": 1796400120.25, "seconds_left": 119.8,
           "confirm_within": 120, "timer": "process 4711", "timer_running": true, "failed": null, "reverted": null,
           "confirmed": false}
"""

import gc

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_run import run
from ansible_collections.xdpfleet.xdp.plugins.module_utils._resource import STATES

ARGUMENT_SPEC = dict(
    interface=dict(type="str", required=True),
    pin_dir=dict(type="path"),
    config=dict(type="raw", no_log=True),  # not secret: 100,000 rules would flood the host's log
    sets=dict(type="dict", no_log=True),  # the same for sets
    rules_file=dict(type="path"),  # read by the action plugin, which sends config instead
    rules_file_format=dict(type="str", choices=["json", "yaml"]),
    revert_to=dict(type="str"),
    content_digest=dict(type="str"),
    state=dict(type="str", default="merged", choices=list(STATES) + ["confirmed"]),
    mode=dict(type="str", default="enforce", choices=["enforce", "shadow", "promote", "discard"]),
    default_action=dict(type="str", choices=["drop", "pass"]),
    sampling=dict(type="int"),
    allow_lockout=dict(type="bool", default=False),
    return_rules=dict(type="bool", default=False),
    confirm_within=dict(type="int"),
    confirm=dict(type="bool", default=False),
)


def main():
    # A 100,000-rule run allocates millions of objects, none in a reference cycle: the cyclic collector's
    # passes over them cost time and free nothing (docs/PERFORMANCE.md).
    gc.disable()
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    request = dict(module.params, diff=module._diff)
    try:
        result = run(request, check_mode=module.check_mode)
    except XdpfleetError as error:
        module.fail_json(msg=str(error), interface=request["interface"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
