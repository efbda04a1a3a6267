#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: xdp_program
short_description: Load, attach, upgrade and detach an XDP program
version_added: 0.1.0
description:
  - Loads an eBPF object with libbpf, pins its maps and attaches its XDP program to an interface over netlink.
  - Idempotent. When the same object is already attached in the same mode the module changes nothing in
    the kernel. A different object replaces the attached one atomically (C(XDP_FLAGS_REPLACE) with the
    expected old program), never detach-then-attach.
  - Maps whose layout is unchanged are carried over with their contents on upgrade.
  - Ownership and the object hash are stored in a small map named C(xdpfleet_meta) bound to the program,
    so they are read from the kernel even when pins are lost.
  - The action plugin compiles O(src) on the controller with C(clang) (cached by a hash of the source, its
    headers, O(cflags) and the compiler version), then runs the module on the host with the object inline
    (O(object_content)).
author:
  - xdpfleet developers (@xdpfleet)
extends_documentation_fragment:
  - xdpfleet.xdp.attributes
  - xdpfleet.xdp.attributes.actiongroup
  - xdpfleet.xdp.attributes.interface
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  state:
    description:
      - V(attached) loads and attaches the program; V(detached) removes it and the pins xdpfleet made.
    type: str
    choices: [attached, detached]
    default: attached
  hook:
    description:
      - How the program takes the interface's XDP hook (see docs/SHARING.md).
      - V(exclusive) attaches it alone.
      - V(chained) loads it into the next-program slot of the xdpfleet firewall attached to the interface (its
        one-entry program array C(xf_next)); the firewall tail-calls it for every packet it passes, so it sees
        only those. The firewall must be attached first; the program runs in the firewall's mode, so leave
        O(mode) out. Replacing it is one map update, atomic for packets. Works on every kernel xdpfleet supports.
        Its maps are pinned in C(/sys/fs/bpf/xdpfleet/<interface>/next) unless O(pin_dir) says otherwise.
        The firewall's boot restore does not restore it.
      - V(dispatcher) adds it to libxdp's multi-program dispatcher, beside the programs other tools attached
        through libxdp (xdp-loader, xdp-filter), which keep their place; it needs libxdp >= 1.3.0 (Debian package
        C(libxdp1)) and a kernel that loads extension programs (C(BPF_PROG_TYPE_EXT)). Where either is missing the
        module fails before touching anything, with the reason in RV(dispatcher.reason).
      - With V(dispatcher) an upgrade adds the new version beside the old one, then removes the old one, in two
        atomic swaps of the dispatcher. No packet misses the program, but one the old version passes while both
        are in place is counted by both. O(state=detached) removes only xdpfleet's program.
    type: str
    choices: [exclusive, chained, dispatcher]
    default: exclusive
  src:
    description:
      - C source of the program on the controller, compiled there with C(clang -O2 -g -target bpf).
      - Mutually exclusive with O(object). O(state=attached) needs O(src), O(object) or O(object_sha256).
    type: path
  compiler:
    description:
      - V(clang) compiles O(src) on the controller and loads the object with libbpf on the host.
      - V(bcc) compiles nothing on the controller; O(src) (its local includes inlined) is transferred and
        compiled on the host with bcc's Python bindings, which need the kernel headers there (see docs/BCC.md).
        Maps get the same names, layout and pins, so the other modules work unchanged. The identity
        (RV(object_sha256)) is then the SHA-256 of the source and O(cflags). Not with O(object) or O(mode=hw).
    type: str
    choices: [clang, bcc]
    default: clang
  object:
    description:
      - A compiled BPF ELF object. On the controller (transferred to the host) unless O(remote_src=true).
    type: path
  remote_src:
    description:
      - O(object) (or with O(compiler=bcc), O(src)) is already on the managed host.
    type: bool
    default: false
  cflags:
    description:
      - Extra compiler flags for O(src), such as C(-D) definitions of the program's own macros or C(-I)
        directories.
    type: list
    elements: str
    default: []
  program:
    description:
      - Name of the XDP program (the C function) in the object.
      - Defaults to the only XDP program of the object; an object with several needs this option.
    type: str
  mode:
    description:
      - V(native) attaches in the driver, V(skb) in the generic path, V(hw) offloads to the NIC.
      - V(auto) tries native and falls back to skb; the result's RV(mode) says which it got. An already
        attached program keeps its mode.
      - Switching an attached program between modes cannot be done atomically and is refused; detach first.
    type: str
    choices: [auto, native, skb, hw]
    default: auto
  object_sha256:
    description:
      - Expected SHA-256 of the object. An object with another hash is refused.
      - Without O(object) and O(src), only checks that the program loaded from an object with this hash is
        attached (as xdpfleet records it in the kernel); otherwise the module fails with RV(object_required).
    type: str
  object_content:
    description:
      - The object's bytes (with O(compiler=bcc), the source's), base64-encoded. Mutually exclusive with
        O(object) and O(src).
      - The action plugin sets it from a controller-side O(object) or O(src), so the object travels with the
        module arguments and every run costs one round trip. It is not echoed back in the result.
    type: str
  force:
    description:
      - Replace (or detach) an XDP program that xdpfleet did not attach. Without it such a program is left alone
        and the module fails.
    type: bool
    default: false
  map_migration:
    description:
      - What to do on upgrade with a map whose layout (type, key size, value size, max entries, flags) changed,
        or when the new object declares another map schema version than the attached one recorded (an object
        declares it as its C(const volatile __u32 xdpfleet_schema_version); without one it is 0).
      - V(keep) refuses the upgrade, naming each map and the difference; V(reset) starts those maps empty.
      - Maps with an unchanged layout always keep their contents.
    type: str
    choices: [keep, reset]
    default: keep
  priority:
    description:
      - With O(hook=dispatcher), the program's run priority in the dispatcher; lower runs first (xdp-filter
        runs at 10). V(50) when not set.
      - Refused with the other hooks, which have no priority.
    type: int
  chain_call_actions:
    description:
      - With O(hook=dispatcher), the verdicts of this program after which the dispatcher runs the next program;
        after any other verdict the packet leaves the dispatcher with it. V([pass]) when not set.
      - Refused with the other hooks.
    type: list
    elements: str
    choices: [aborted, drop, pass, tx, redirect]
  map_sizes:
    description:
      - Sizes of the object's maps (map name to C(max_entries)), set before the object is loaded in place of the
        sizes the object declares. With O(compiler=bcc) they replace the sizes of the translated declarations.
      - Only maps whose size is a number of entries (hash, array, LRU, LPM trie and other such maps); a ring
        buffer, for one, is refused.
      - A program attached from the same object whose map has another size is loaded again. The map's layout
        then changed, so O(map_migration) applies to it; the other maps keep their contents.
      - Maps not named here are created with the size the object declares whenever the object is loaded; when
        the attached program is current they are left as they are.
    type: dict
notes:
  - Needs root (CAP_BPF, CAP_NET_ADMIN), libbpf.so.1 (Debian package C(libbpf1)) on the host, and a kernel
    >= 5.10.
requirements:
  - libbpf >= 1.0 on the managed host
  - clang on the controller when O(src) is used with O(compiler=clang)
  - bcc (python3-bpfcc or python3-bcc) and kernel headers on the managed host with O(compiler=bcc)
seealso:
  - name: XDP flags and modes
    description: Kernel documentation of the XDP attach flags.
    link: https://docs.kernel.org/bpf/redirect.html
"""

EXAMPLES = r"""
# The firewall this collection ships is deployed by the xdpfleet.xdp.firewall role (playbook
# xdpfleet.xdp.deploy_xdp). These examples attach a program of your own, kept in files/ beside the playbook.
- name: Compile your own program (files/my_filter.bpf.c) on the controller and attach it to eth0
  xdpfleet.xdp.xdp_program:
    interface: eth0
    src: my_filter.bpf.c
    cflags: [-DBLOCKED_PORT=23]

- name: Hash the build of your own program on the controller
  ansible.builtin.stat:
    path: "{{ playbook_dir }}/files/my_filter.o"
    checksum_algorithm: sha256
  delegate_to: localhost
  register: my_filter

- name: Attach your own program's object that your packaging put on the host, refusing any other build
  xdpfleet.xdp.xdp_program:
    interface: eth0
    object: /usr/local/lib/my_filter.o
    remote_src: true
    object_sha256: "{{ my_filter.stat.checksum }}"
    mode: native

- name: Upgrade to a new build of your own program (files/my_filter.o), starting maps with a changed layout empty
  xdpfleet.xdp.xdp_program:
    interface: eth0
    object: my_filter.o
    map_migration: reset

- name: Attach your own program with room for 1,000,000 entries in its map flows, starting it empty if it had another size
  xdpfleet.xdp.xdp_program:
    interface: eth0
    object: my_filter.o
    map_sizes:
      flows: 1000000
    map_migration: reset

- name: Run your own program (files/my_filter.o) before xdp-filter, in libxdp's dispatcher they share
  xdpfleet.xdp.xdp_program:
    interface: eth0
    object: my_filter.o
    hook: dispatcher
    priority: 5
    chain_call_actions: [pass]

- name: Remove the program and its pinned maps
  xdpfleet.xdp.xdp_program:
    interface: eth0
    state: detached

- name: Run your own counting program (files/count.bpf.c) behind the firewall on packets the firewall passes
  xdpfleet.xdp.xdp_program:
    interface: eth0
    src: count.bpf.c
    hook: chained

- name: Take it out of the firewall's next-program slot
  xdpfleet.xdp.xdp_program:
    interface: eth0
    hook: chained
    state: detached
"""

RETURN = r"""
interface:
  description: The interface.
  returned: always
  type: str
  sample: eth0
prog_id:
  description: Kernel id of the attached program, null when none is attached.
  returned: always
  type: int
  sample: 4711
tag:
  description: The program's tag (hash of its instructions) as the kernel reports it.
  returned: always
  type: str
  sample: 9b1a4c0d2e3f4a5b
mode:
  description: The mode the program is attached in (native, skb or hw), null when none is attached.
  returned: always
  type: str
  sample: native
object_sha256:
  description: SHA-256 of the object the attached program was loaded from, null for a foreign program.
  returned: always
  type: str
program:
  description: Name of the attached program's function as xdpfleet recorded it.
  returned: always
  type: str
  sample: xdpfleet_fw
owner:
  description: V(xdpfleet) when xdpfleet attached the program, V(foreign) for another tool's, null when none.
  returned: always
  type: str
map_schema_version:
  description:
    - The schema version of the program's maps that xdpfleet recorded at attach (see O(map_migration)); 0 for
      an unversioned object, null for a foreign program or none.
  returned: always
  type: int
  sample: 1
pin_dir:
  description: Directory where the program's maps are pinned.
  returned: always
  type: str
  sample: /sys/fs/bpf/xdpfleet/eth0
maps:
  description: The program's maps (global-variable maps left out).
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
    type:
      description: Kernel map type number.
      type: int
    key_size:
      description: Key size in bytes.
      type: int
    value_size:
      description: Value size in bytes.
      type: int
    max_entries:
      description: Maximum number of entries.
      type: int
    map_flags:
      description: Map flags.
      type: int
pins_removed:
  description: Pins removed by O(state=detached).
  returned: when O(state=detached)
  type: list
  elements: str
object_required:
  description: True when only O(object_sha256) was given and the attached program is another one.
  returned: on that failure
  type: bool
  sample: true
hook:
  description: How the program holds the hook (O(hook)), with O(hook=dispatcher).
  returned: with O(hook=dispatcher)
  type: str
  sample: dispatcher
priority:
  description: The run priority of xdpfleet's program in the dispatcher, null when it is not in it.
  returned: with O(hook=dispatcher)
  type: int
  sample: 5
chain_call_actions:
  description: The chain-call actions of xdpfleet's program in the dispatcher, null when it is not in it.
  returned: with O(hook=dispatcher)
  type: list
  elements: str
  sample: [pass]
dispatcher:
  description: The libxdp dispatcher on the interface after the run, or why it cannot run on this host.
  returned: with O(hook=dispatcher), on success and when the dispatcher is unavailable
  type: dict
  contains:
    available:
      description: False when the dispatcher cannot run on this host.
      type: bool
    reason:
      description: Why the dispatcher cannot run (libxdp missing or too old, the kernel refusing extension programs).
      type: str
      returned: when O(hook=dispatcher) is unavailable
    dispatcher_id:
      description: Kernel id of the dispatcher program; absent when the hook holds no dispatcher.
      type: int
    mode:
      description: The mode the dispatcher is attached in.
      type: str
    programs:
      description: The dispatcher's programs in run order (each with C(prog_id), C(priority), C(chain_call_actions)).
      type: list
      elements: dict
verifier_log:
  description: End of the verifier log when the kernel rejected the program.
  returned: on a verifier rejection
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
    from ansible_collections.xdpfleet.xdp.plugins.module_utils._program import run
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()

ARGUMENT_SPEC = dict(
    interface=dict(type="str", required=True),
    state=dict(type="str", choices=["attached", "detached"], default="attached"),
    hook=dict(type="str", choices=["exclusive", "chained", "dispatcher"], default="exclusive"),
    src=dict(type="path"),
    object=dict(type="path"),
    remote_src=dict(type="bool", default=False),
    compiler=dict(type="str", choices=["clang", "bcc"], default="clang"),
    cflags=dict(type="list", elements="str", default=[]),
    program=dict(type="str"),
    mode=dict(type="str", choices=["auto", "native", "skb", "hw"], default="auto"),
    pin_dir=dict(type="path"),
    object_sha256=dict(type="str"),
    object_content=dict(type="str", no_log=True),
    force=dict(type="bool", default=False),
    map_migration=dict(type="str", choices=["keep", "reset"], default="keep"),
    map_sizes=dict(type="dict"),
    priority=dict(type="int"),
    chain_call_actions=dict(type="list", elements="str", choices=["aborted", "drop", "pass", "tx", "redirect"]),
)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[("src", "object", "object_content")],
        required_if=[("state", "attached", ("src", "object", "object_sha256", "object_content"), True)],
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="cannot import the xdpfleet module_utils", exception=IMPORT_ERROR)
    if module.params["src"] and not (module.params["compiler"] == "bcc" and module.params["remote_src"]):
        module.fail_json(msg="src is compiled by the xdp_program action plugin; run this module by its name "
                             "xdpfleet.xdp.xdp_program so the action plugin runs")
    try:
        result = run(module.params, module.check_mode)
    except XdpfleetError as error:
        module.fail_json(msg=str(error), **getattr(error, "details", {}))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
