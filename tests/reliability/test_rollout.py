"""update_rules.yml on the reliability lab: a host becomes unreachable in the middle of a rollout (its veth goes
down once the first batch is done): the play stops as documented, every host holds one complete rule set, later
batches are untouched, and a re-run after the host returns converges. The shadow phase's gate stops a rollout
before anything is enforced; a rollout with a shadow phase promotes and confirms every batch; a batch the change
cuts off reverts by itself and the play stops naming it."""

import socket
import subprocess
import time

from tests.helpers.hosts import ansible_env, playbook, playbook_command, recap, run_module, write_variables
from tests.helpers.traffic import Stream
from tests.lab.layout import REPO
from tests.reliability.common import BASE_RULES, LAYOUT, LOST_STATE_HOST, SECOND_INTERFACE

NEW_RULES = BASE_RULES + [{"name": "no-dns", "action": "drop", "protocol": "udp", "port": 53}]
# no ControlPersist: a master connection from an earlier run would outlive the cut-off for minutes;
# Ansible's default 10 s connect timeout, so only the host whose link is down fails to connect
NO_CONTROL_MASTER = dict(ANSIBLE_SSH_ARGS="-o ControlMaster=no", ANSIBLE_TIMEOUT="10")


def xdp_rules(host, args):
    return run_module(host, "xdp_rules", dict(args, interface="eth0"))


def rules_of(host):
    return xdp_rules(host, {"state": "gathered"})["gathered"]


def reachability(lab):
    """What the controller sees of each host when a rollout ended early: SSH port, neighbour, link."""
    lines = [subprocess.run(["ip", "neigh", "show", "dev", LAYOUT.bridge], capture_output=True, text=True,
                            check=False).stdout]
    for host in lab.hosts:
        try:
            socket.create_connection((host.address, 22), timeout=3).close()
            port = "port 22 open"
        except OSError as error:
            port = "port 22: %s" % error
        link = subprocess.run(["ip", "-s", "link", "show", LAYOUT.peer_ifname(host.netns)], capture_output=True,
                              text=True, check=False).stdout
        lines.append("%s: %s; xdp stats %s\n%s" % (host.name, port, xdp_stats(host), link))
    return "\n".join(lines)


def xdp_stats(host):
    facts = run_module(host, "xdp_facts", {"interfaces": ["eth0"], "xdp_modes": False})["ansible_facts"]["xdp"]
    return facts["interfaces"]["eth0"]["stats"]


def test_unreachable_host_stops_the_rollout_and_a_rerun_converges(deployed, tmp_path):
    first, lost, last = deployed.hosts
    variables = {"xdp_serial": 1, "xdp_rules": NEW_RULES}
    rollout = subprocess.Popen(playbook_command(deployed.inventory, REPO / "playbooks" / "update_rules.yml",
                                                write_variables(tmp_path, "rollout", variables)),
                               cwd=REPO, env=ansible_env(**NO_CONTROL_MASTER), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    peer = LAYOUT.peer_ifname(lost.netns)
    try:
        while rules_of(first) != NEW_RULES:
            assert rollout.poll() is None, rollout.stdout.read() + reachability(deployed)
            time.sleep(0.5)
        subprocess.run(["ip", "link", "set", peer, "down"], check=True)
        output = rollout.communicate(timeout=600)[0]
    finally:
        subprocess.run(["ip", "link", "set", peer, "up"], check=True)
    assert rollout.returncode != 0, output
    assert recap(output)[lost.name]["unreachable"] == 1, output
    assert last.name not in recap(output), "the batch after the lost host ran: " + output
    assert rules_of(first) == NEW_RULES
    assert rules_of(lost) in (BASE_RULES, NEW_RULES)
    assert rules_of(last) == BASE_RULES

    rerun = playbook(deployed, "update_rules.yml", tmp_path, variables)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert [rules_of(host) for host in deployed.hosts] == [NEW_RULES] * 3
    for host in deployed.hosts:
        xdp_rules(host, {"state": "overridden", "config": BASE_RULES})


# --- the shadow phase and confirmed changes -------------------------------------------------------------------

FLOW_PORT = 5003
NO_FLOW = {"name": "no-flow", "action": "drop", "protocol": "udp", "port": FLOW_PORT}
QUICK = dict(xdp_serial=1, xdp_health_timeout=3, xdp_confirm_within=10, xdp_change_timeout=20)


def facts_of(host):
    return run_module(host, "xdp_facts", {"interfaces": ["eth0"], "xdp_modes": False})[
        "ansible_facts"]["xdp"]["interfaces"]["eth0"]


def back_to_base(lab):
    """Every interface of the lab holds BASE_RULES again, with no revert armed."""
    for host in lab.hosts:
        for interface in ("eth0", SECOND_INTERFACE) if host is lab.hosts[LOST_STATE_HOST] else ("eth0",):
            restored = run_module(host, "xdp_rules", {"interface": interface, "state": "overridden",
                                                      "config": BASE_RULES, "allow_lockout": True})
            if restored["revert"]["armed"]:
                run_module(host, "xdp_rules", {"interface": interface, "state": "confirmed"})


def test_the_shadow_gate_stops_a_rollout_before_anything_is_enforced(deployed, tmp_path):
    first = deployed.hosts[0]
    stream = Stream(deployed, first, [FLOW_PORT], tmp_path / "stop", pause=0.005)
    try:
        run = playbook(deployed, "update_rules.yml", tmp_path, dict(
            QUICK, xdp_rules=BASE_RULES + [NO_FLOW], xdp_shadow_seconds=3, xdp_shadow_max_drop_percent=1.0))
    finally:
        sent, (received,) = stream.stop()
    assert run.returncode != 0, run.stdout[-3000:]
    assert "%s: shadow check" % first.name in run.stdout and "that the enforced rules pass, above the ceiling of " \
        "1.0%" in run.stdout, run.stdout[-3000:]
    assert set(recap(run.stdout)) == {first.name}, "a later batch ran: " + run.stdout[-3000:]
    assert received == sent, "the shadow set dropped packets: sent %d, received %d" % (sent, received)
    assert rules_of(first) == BASE_RULES and facts_of(first)["shadow"] is None


def test_a_rollout_with_a_shadow_phase_promotes_and_confirms_every_batch(deployed, tmp_path):
    new_rules = BASE_RULES + [NO_FLOW]
    try:
        run = playbook(deployed, "update_rules.yml", tmp_path, dict(
            QUICK, xdp_rules=new_rules, xdp_shadow_seconds=1, xdp_shadow_max_drop_percent=1.0))
        assert run.returncode == 0, run.stdout[-3000:]
        assert "the shadow set would drop 0.0% of " in run.stdout, run.stdout[-3000:]
        for host in deployed.hosts:
            facts = facts_of(host)
            assert rules_of(host) == new_rules and facts["shadow"] is None and not facts["revert"]["armed"], facts
    finally:
        back_to_base(deployed)


def test_a_batch_the_change_cuts_off_reverts_by_itself_and_the_play_stops(deployed, tmp_path):
    first, cut_off, last = deployed.hosts
    # drops SSH to the second host only: its batch loses the controller the moment the change is applied
    cutting = [{"name": "cut", "action": "drop", "destination": cut_off.address + "/32", "protocol": "tcp",
                "port": 22}] + BASE_RULES
    try:
        run = playbook(deployed, "update_rules.yml", tmp_path, dict(QUICK, xdp_rules=cutting, xdp_allow_lockout=True),
                       env=ansible_env(**NO_CONTROL_MASTER))
        assert run.returncode != 0, run.stdout[-3000:]
        assert "reverted by themselves before the change was confirmed: %s" % cut_off.name in run.stdout, \
            run.stdout[-3000:]
        assert last.name not in recap(run.stdout), "the batch after the cut-off host ran: " + run.stdout[-3000:]
        assert rules_of(first) == cutting and rules_of(cut_off) == BASE_RULES and rules_of(last) == BASE_RULES
        reverted = facts_of(cut_off)["revert"]["reverted"]
        assert reverted["by"] == "timer" and reverted["at"] - reverted["deadline"] <= 2, reverted
    finally:
        back_to_base(deployed)
