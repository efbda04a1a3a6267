"""Confirmed changes where systemd runs (a Debian 12 guest booted by tests/vm): the revert armed by xdp_rules
confirm_within is a transient systemd timer, which fires at the deadline unless a confirmation stops it; and a real
reboot before the confirmation brings back, through xdpfleet-restore.service, the rule set before the change.

The namespace lab has no systemd (tests/integration/test_confirmed_changes.py covers the timer process there). One
playbook run deploys the firewall role (its restore unit enabled), then runs the tasks below over SSH.
Uses the lab layout cf / 198.18.130.0/24, as that suite does: the two must not run at the same time.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.lab import Lab
from tests.lab.layout import Layout
from tests.vm import guests

REPO = Path(__file__).resolve().parents[2]
LAYOUT = Layout("cf", 130)
SSH_PASS = {"name": "ssh", "action": "pass", "source": LAYOUT.bridge_address + "/32", "protocol": "tcp", "port": 22}
BASE = [SSH_PASS]
CHANGE = BASE + [{"name": "no-ping", "action": "drop", "protocol": "icmp"}]
LATER = CHANGE + [{"name": "no-dns", "action": "drop", "protocol": "udp", "port": 53}]
FIRES_IN = 12  # seconds: under TCG each module run takes seconds
# Seconds after the deadline the revert must have fired by: 2 as on the namespace lab, and more under TCG, where the
# interpreter the timer starts needs over a second to import the collection's code from its zip.
ALLOWANCE = {"kvm": 2, "tcg": 4}


def _rules(register, **args):
    return {"name": register, "register": register, "xdpfleet.xdp.xdp_rules": dict(interface="eth0", **args)}


def _shell(register, command):
    return {"name": register, "register": register, "changed_when": False, "ansible.builtin.shell": command}


UNITS = "systemctl list-units --all --plain --no-legend 'xdpfleet-revert-*'"
TASKS = [
    _rules("armed", state="overridden", config=CHANGE, confirm_within=FIRES_IN),
    _shell("timers", "systemctl list-timers --all --plain --no-legend 'xdpfleet-revert-*'"),
    {"name": "past the deadline", "ansible.builtin.pause": {
        "seconds": "{{ [1, (armed.revert.deadline + %d - now().timestamp()) | round(0, 'ceil') | int] | max }}"
                   % max(ALLOWANCE.values())}},
    _rules("reverted", state="gathered"),
    _shell("units_after_firing", UNITS),
    _rules("armed_again", state="overridden", config=CHANGE, confirm_within=FIRES_IN),
    _rules("confirmed", state="confirmed"),
    _shell("units_after_confirming", UNITS),
    {"name": "past the second deadline", "ansible.builtin.pause": {
        "seconds": "{{ [1, (armed_again.revert.deadline + 2 - now().timestamp()) | round(0, 'ceil') | int] | max }}"}},
    _rules("kept", state="gathered"),
    _rules("unconfirmed", state="overridden", config=LATER, confirm_within=600),
    # the image has no D-Bus, which shutdown(8) asks first; systemctl -i falls back to systemd itself
    {"name": "reboot", "ansible.builtin.reboot": {"reboot_timeout": 600, "reboot_command": "systemctl reboot -i"}},
    _rules("after_reboot", state="gathered"),
    _shell("units_after_reboot", UNITS),
    _shell("restore_log", "journalctl -b -u xdpfleet-restore.service --no-pager -o cat"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    lab = Lab.load(LAYOUT)
    assert not lab.hosts, "the namespace lab %s is up: take it down first (python -m tests.lab --prefix %s " \
        "--subnet %d down)" % (LAYOUT.prefix, LAYOUT.prefix, LAYOUT.subnet)
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    directory = tmp_path_factory.mktemp("vm-confirm")
    try:  # a boot that fails part-way leaves guests and taps too
        booted = guests.up(LAYOUT, 1)
        names = [task["register"] for task in TASKS if "register" in task]
        save = {"name": "save", "delegate_to": "localhost",
                "ansible.builtin.copy": {"dest": str(directory / "results.json"), "content": "{{ %s | to_json }}" % (
                    "{" + ", ".join("'%s': %s" % (name, name) for name in names) + "}")}}
        playbook = directory / "confirm.yml"
        playbook.write_text(yaml.safe_dump([
            {"ansible.builtin.import_playbook": str(REPO / "playbooks" / "deploy_xdp.yml")},
            {"hosts": "vm", "gather_facts": False, "tasks": TASKS + [save]}], sort_keys=False))
        variables = directory / "vars.yml"
        variables.write_text(yaml.safe_dump({"xdp_rules": BASE, "xdp_prereqs_install_packages": False}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        done = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i",
                               str(guests.inventory_path(LAYOUT)), str(playbook), "-e", "@%s" % variables],
                              capture_output=True, text=True, env=env, timeout=1800, cwd=REPO, check=False)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        found = json.loads((directory / "results.json").read_text())
        found["accelerator"] = booted["accelerator"]
        yield found
    finally:
        guests.down(LAYOUT)


def test_an_unconfirmed_change_is_reverted_by_a_transient_systemd_timer_that_then_goes_away(results):
    armed = results["armed"]["revert"]
    assert armed["armed"] and armed["timer_running"] and armed["timer"].startswith("systemd timer xdpfleet-revert-eth0-")
    unit = armed["timer"].split()[-1]
    assert unit in results["timers"]["stdout"]
    fired = results["reverted"]["revert"]["reverted"]
    print("time to revert (deadline to the reverted record, %s): %.3f s" % (
        results["accelerator"], fired["at"] - fired["deadline"]))
    assert fired["by"] == "timer" and 0 <= fired["at"] - fired["deadline"] <= ALLOWANCE[results["accelerator"]]
    assert results["reverted"]["gathered"] == BASE
    assert results["units_after_firing"]["stdout"] == ""


def test_a_confirmation_stops_the_timer_and_the_change_stays(results):
    assert results["armed_again"]["revert"]["armed"]
    assert results["confirmed"]["changed"] and results["confirmed"]["revert"]["confirmed"]
    assert results["units_after_confirming"]["stdout"] == ""
    assert results["kept"]["gathered"] == CHANGE and not results["kept"]["revert"]["armed"]


def test_a_reboot_before_the_confirmation_restores_the_rules_before_the_change(results):
    assert results["unconfirmed"]["revert"]["armed"]
    after = results["after_reboot"]
    assert after["gathered"] == CHANGE, "the unconfirmed change survived the reboot"
    assert after["revert"]["reverted"]["by"] == "boot" and not after["revert"]["armed"]
    assert results["units_after_reboot"]["stdout"] == ""
    assert "eth0: program" in results["restore_log"]["stdout"]
    assert "reverting the change armed at" in results["restore_log"]["stdout"]
