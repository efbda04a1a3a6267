"""A host becomes unreachable in the middle of update_rules.yml (its veth goes down once the first
batch is done): the play stops as documented, every host holds one complete rule set, later batches are
untouched, and a re-run after the host returns converges."""

import subprocess
import time

from tests.helpers.hosts import ModuleRunner, ansible_env, playbook, playbook_command, recap, write_variables
from tests.lab.layout import REPO
from tests.reliability.common import BASE_RULES, LAYOUT

NEW_RULES = BASE_RULES + [{"name": "no-dns", "action": "drop", "protocol": "udp", "port": 53}]
# no ControlPersist: a master connection from an earlier run would outlive the cut-off for minutes
FAST_FAILING_SSH = dict(ANSIBLE_SSH_ARGS="-o ControlMaster=no", ANSIBLE_TIMEOUT="5")


def xdp_rules(host, args):
    runner = ModuleRunner(host)
    try:
        return runner.run("xdp_rules", dict(args, interface="eth0"))
    finally:
        runner.close()


def rules_of(host):
    return xdp_rules(host, {"state": "gathered"})["gathered"]


def test_unreachable_host_stops_the_rollout_and_a_rerun_converges(deployed, tmp_path):
    first, lost, last = deployed.hosts
    variables = {"xdp_serial": 1, "xdp_rules": NEW_RULES}
    rollout = subprocess.Popen(playbook_command(deployed.inventory, REPO / "playbooks" / "update_rules.yml",
                                                write_variables(tmp_path, "rollout", variables)),
                               cwd=REPO, env=ansible_env(**FAST_FAILING_SSH), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    peer = LAYOUT.peer_ifname(lost.netns)
    try:
        while rules_of(first) != NEW_RULES:
            assert rollout.poll() is None, rollout.stdout.read()
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
