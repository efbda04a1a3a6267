# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lockout guard: xdp_rules refuses a rule set that would drop the SSH session it runs over."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_model import PROTOCOLS, rule_line
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import (
    ACTION_NAMES, DST_SET, HAS_PORT, HAS_PROTO, NO_PREFIX, RULE, SRC_SET)


class LockoutError(_errors.XdpfleetError):
    pass


def ssh_packet(environ):
    """The packet the SSH client sends to this host, from SSH_CONNECTION; None outside SSH."""
    fields = (environ.get("SSH_CONNECTION") or "").split()
    if len(fields) != 4:
        return None
    client, client_port, server, server_port = fields
    return {"source": client, "destination": server, "protocol": "tcp",
            "source_port": int(client_port), "port": int(server_port)}


def check_lockout(entries, packed_rules, default_action, environ, sets=None):
    """Raises LockoutError when the rule set (entries, and the same rules packed; sets: {tag: AddressSet} of
    the sets they name) would drop the SSH connection this run came over."""
    packet = ssh_packet(environ)
    if packet is None:
        return
    number = first_matching_rule(packed_rules, packet["source"], packet["destination"],
                                 PROTOCOLS[packet["protocol"]], packet["port"], sets)
    action = default_action if number is None else ACTION_NAMES[RULE.unpack(packed_rules[number]).action]
    if action != "drop":
        return
    culprit = "the default action drop" if number is None else \
        "rule %d (%s)" % (number + 1, rule_line(entries[number]))
    raise LockoutError("%s would drop this SSH connection (tcp from %s port %d to %s port %d); "
                       "set allow_lockout: true to apply it anyway"
                       % (culprit, packet["source"], packet["source_port"], packet["destination"], packet["port"]))


def first_matching_rule(packed_rules, source, destination, protocol, port=None, sets=None):
    """The number of the first packed rule that matches an IP packet, or None: the program's rule order.
    port: the destination port, None for a packet without one; sets: {tag: AddressSet} of the sets named."""
    source, destination = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family, width = source.version, source.max_prefixlen
    for number, rule in enumerate(map(RULE.unpack, packed_rules)):
        if (rule.src_len != NO_PREFIX or rule.dst_len != NO_PREFIX) and rule.family != family:
            continue
        if not (_prefix_holds(rule.src_len, rule.src, int(source), width)
                and _prefix_holds(rule.dst_len, rule.dst, int(destination), width)):
            continue
        if (rule.flags & SRC_SET and not sets[rule.src].holds(source)) or \
                (rule.flags & DST_SET and not sets[rule.dst].holds(destination)):
            continue
        if rule.flags & HAS_PROTO and rule.proto != protocol:
            continue
        if rule.flags & HAS_PORT and not (port is not None and rule.port_lo <= port <= rule.port_hi):
            continue
        return number
    return None


def _prefix_holds(length, raw, address, width):
    if length == NO_PREFIX:
        return True
    shift = width - length
    return int.from_bytes(raw[:width // 8], "big") >> shift == address >> shift
