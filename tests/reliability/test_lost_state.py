"""Lost state on one host, all at once: pins removed, bpffs unmounted, /etc/xdpfleet emptied (in the lab
it is a mount point), and a firewalled interface deleted and re-created. xdp_facts tells the truth from
the kernel, and a re-run of deploy_xdp.yml repairs everything."""

from tests.helpers.hosts import ModuleRunner, playbook
from tests.reliability.common import BASE_RULES, LOST_STATE_HOST, SECOND_INTERFACE, deploy_variables

INTERFACES = ["eth0", SECOND_INTERFACE]
LOSE_EVERYTHING = ("rm -rf /sys/fs/bpf/xdpfleet && umount /sys/fs/bpf && find /etc/xdpfleet -mindepth 1 -delete && "
                   "ip link del {0} && ip link add {0} type veth peer name {0}p && ip link set {0} up && "
                   "ip link set {0}p up").format(SECOND_INTERFACE)


def facts(host):
    runner = ModuleRunner(host)
    try:
        return runner.run("xdp_facts", {"interfaces": INTERFACES, "xdp_modes": False})["ansible_facts"]["xdp"]
    finally:
        runner.close()


def gathered(host, interface):
    runner = ModuleRunner(host)
    try:
        return runner.run("xdp_rules", {"interface": interface, "state": "gathered"})
    finally:
        runner.close()


def test_facts_tell_the_truth_and_deploy_repairs(deployed, tmp_path):
    host = deployed.hosts[LOST_STATE_HOST]
    before = facts(host)
    assert all(before["interfaces"][name]["owner"] == "xdpfleet" for name in INTERFACES), before

    lost = host.run(LOSE_EVERYTHING)
    assert lost.rc == 0, lost

    truth = facts(host)
    eth0, second = truth["interfaces"]["eth0"], truth["interfaces"][SECOND_INTERFACE]
    assert truth["capabilities"]["bpffs_mounted"] is False
    assert (eth0["attached"], eth0["prog_id"], eth0["owner"], eth0["name"]) == \
        (True, before["interfaces"]["eth0"]["prog_id"], "xdpfleet", "xdpfleet_fw")
    assert eth0["rule_count"] == len(BASE_RULES), eth0
    assert second["attached"] is False, second
    assert gathered(host, "eth0")["failed"], "rules gathered without pins"

    run = playbook(deployed, "deploy_xdp.yml", tmp_path, deploy_variables(xdp_hosts=host.name))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr

    repaired = facts(host)
    assert repaired["capabilities"]["bpffs_mounted"] is True
    for name in INTERFACES:
        interface = repaired["interfaces"][name]
        assert (interface["attached"], interface["owner"], interface["rule_count"]) == \
            (True, "xdpfleet", len(BASE_RULES)), (name, interface)
        assert gathered(host, name)["gathered"] == BASE_RULES
    assert host.run("test -s /etc/xdpfleet/eth0.json && test -e /sys/fs/bpf/xdpfleet/eth0/xf_config").rc == 0
