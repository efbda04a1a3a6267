# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot-time restore: re-attach the firewall and re-apply its rules from the desired state on disk.

The firewall role records, per interface, which object it attached and how in
/etc/xdpfleet/programs/<interface>.json; xdp_rules keeps the rules in /etc/xdpfleet/<interface>.json.
This runs the same code as the modules (xdp_program's and xdp_rules' module_utils), so a restored
host is exactly what the modules would have made. xdpfleet-restore.service runs it as

    python3 /var/lib/xdpfleet/xdpfleet-restore.pyz   (a zipapp of the module_utils built by the firewall role)

whose __main__ (roles/firewall/files/restore_main.py) reports what restore_all() yields.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import json
import os
import time

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_confirm, _program
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_run import run as run_rules
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import STATE_DIR, read_state, restoring_request
from ansible_collections.xdpfleet.xdp.plugins.module_utils._hostfs import LOCK_DIR

PROGRAM_DIR = os.path.join(STATE_DIR, "programs")
INTERFACE_WAIT = 30.0  # seconds for an interface to appear (udev may still be renaming NICs at boot)


def program_records(program_dir=PROGRAM_DIR):
    """The recorded programs, one dict per interface, sorted by interface."""
    records = []
    for path in sorted(glob.glob(os.path.join(program_dir, "*.json"))):
        with open(path) as handle:
            records.append(json.load(handle))
    return records


def wait_for_interface(interface, timeout=INTERFACE_WAIT):
    deadline = time.monotonic() + timeout
    while not os.path.exists("/sys/class/net/%s" % interface):
        if time.monotonic() > deadline:
            raise _program.ProgramError("interface %s did not appear within %.0f s" % (interface, timeout))
        time.sleep(0.2)


def restore_program(record):
    """Attaches the recorded object in the recorded mode (nothing changes when it is already attached)."""
    params = {"interface": record["interface"], "state": "attached", "hook": "exclusive", "object": record["object"],
              "remote_src": True, "program": record.get("program"), "mode": record.get("mode") or "auto",
              "pin_dir": record.get("pin_dir"), "object_sha256": record.get("object_sha256"),
              "force": False, "map_migration": "keep", "map_sizes": record.get("map_sizes")}
    return _program.run(params, check_mode=False)


def revert_unconfirmed(interface, pin_dir, state_dir=STATE_DIR, lock_dir=LOCK_DIR):
    """Makes the kernel hold the rules before a change that was not confirmed when the host went down (its revert
    was armed; see _fw_confirm); None when none was."""
    token = _fw_confirm.armed_token(interface, state_dir)
    if token is None:
        return None
    result = run_rules(_fw_confirm.fire_request(interface, pin_dir, token, "boot"), state_dir=state_dir,
                       lock_dir=lock_dir)
    return result if "rule_count" in result else None  # else confirmed meanwhile


def restore_rules(interface, pin_dir, state_dir=STATE_DIR, lock_dir=LOCK_DIR):
    """Makes the kernel hold the rules xdp_rules last stored; None when nothing was stored."""
    stored = read_state(interface, state_dir)
    if stored is None:
        return None
    return run_rules(restoring_request(interface, pin_dir, stored), state_dir=state_dir, lock_dir=lock_dir)


def rules_restored(interface, pin_dir, state_dir=STATE_DIR, lock_dir=LOCK_DIR):
    """The rules restored, told in words: how many the interface holds now, or that none were stored; an
    unconfirmed change is reverted rather than restored."""
    reverted = revert_unconfirmed(interface, pin_dir, state_dir, lock_dir)
    if reverted is not None:
        return "%d rules, reverting the change armed at %s that was not confirmed" % (
            reverted["rule_count"]["after"], _fw_confirm.utc(reverted["revert"]["reverted"]["armed_at"]))
    result = restore_rules(interface, pin_dir, state_dir, lock_dir)
    return "no stored rules" if result is None else "%d rules" % result["rule_count"]["after"]


def restore(record):
    interface = record["interface"]
    wait_for_interface(interface)
    program = restore_program(record)
    return "%s: program %s (id %s, %s mode), %s" % (interface, program["program"], program["prog_id"],
                                                    program["mode"], rules_restored(interface, program["pin_dir"]))


def restore_all(program_dir=PROGRAM_DIR):
    """Restores every recorded interface; one failing interface does not stop the others.

    Yields (True, report) or (False, report of the failure) per interface, as each is done.
    """
    for record in program_records(program_dir):
        try:
            report = restore(record)
        except Exception as error:  # noqa: BLE001 - report and go on with the next interface
            yield False, "%s: FAILED: %s" % (record.get("interface"), error)
        else:
            yield True, report
