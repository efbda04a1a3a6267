"""A host becomes unreachable in the middle of update_rules.yml (its veth goes down once the first
batch is done): the play stops as documented, every host holds one complete rule set, later batches are
untouched, and a re-run after the host returns converges."""

import socket
import subprocess
import time

from tests.helpers.hosts import ansible_env, playbook, playbook_command, recap, run_module, write_variables
from tests.lab.layout import REPO
from tests.reliability.common import BASE_RULES, LAYOUT

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
