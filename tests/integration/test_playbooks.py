"""The playbooks end to end on a lab of their own (5 hosts, 198.18.70.0/24): deploy twice, a boot-time
restore, a rolling update whose health check fails on one host, removal."""

import json
import re
import subprocess

import pytest

from tests.helpers.hosts import ansible_env, playbook, recap
from tests.lab import Lab, Layout
from tests.lab.layout import REPO

LAYOUT = Layout("xr", 70)
HOSTS = 5
HEALTH_PORT = 8080
UNHEALTHY = "xr-h3"  # runs no service on HEALTH_PORT, so its health check fails
RULES_V1 = [{"name": "no-ping", "action": "drop", "protocol": "icmp"},
            {"name": "blocked-net", "action": "drop", "source": "198.18.99.0/24"}]
RULES_V2 = RULES_V1 + [{"name": "no-dns", "action": "drop", "protocol": "udp", "port": 53}]


@pytest.fixture(scope="module")
def fleet():
    lab = Lab.up(HOSTS, LAYOUT)
    yield lab
    lab.down()


def module(lab, host, name, args):
    """One module run on one host through `ansible`, its result as a dict."""
    argv = ["ansible", "-i", str(lab.inventory), host, "-o", "-m", name, "-a", json.dumps(args)]
    run = subprocess.run(argv, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    status, separator, result = run.stdout.partition(" => ")
    assert status in ("%s | SUCCESS" % host, "%s | CHANGED" % host), run.stdout + run.stderr
    return json.loads(result)


def gathered_names(lab, host):
    result = module(lab, host, "xdpfleet.xdp.xdp_rules", {"interface": "eth0", "state": "gathered"})
    return [rule["name"] for rule in result["gathered"]]


def firewall_identity(lab, host):
    """What must survive a reboot, as xdp_facts reports it, plus the rules themselves."""
    facts = module(lab, host, "xdpfleet.xdp.xdp_facts", {"interfaces": ["eth0"], "xdp_modes": False})
    eth0 = facts["ansible_facts"]["xdp"]["interfaces"]["eth0"]
    identity = {key: eth0[key] for key in ("name", "tag", "mode", "owner", "object_sha256", "pin_dir",
                                           "rule_count", "default_action")}
    identity["rules"] = module(lab, host, "xdpfleet.xdp.xdp_rules", {"interface": "eth0", "state": "gathered"})["gathered"]
    return identity, eth0


@pytest.fixture(scope="module")
def first_deploy(fleet, tmp_path_factory):
    return playbook(fleet, "deploy_xdp.yml", tmp_path_factory.mktemp("deploy"), {"xdp_rules": RULES_V1})


def test_deploy_attaches_everywhere_and_a_second_run_changes_nothing(fleet, first_deploy, tmp_path):
    assert first_deploy.returncode == 0, first_deploy.stdout[-3000:] + first_deploy.stderr
    attached = fleet.run_parallel("ip -d link show eth0", via="nsenter")
    assert all("prog/xdp" in result.out and "xdpfleet_fw" in result.out for result in attached.values()), attached

    second = playbook(fleet, "deploy_xdp.yml", tmp_path, {"xdp_rules": RULES_V1})
    assert second.returncode == 0, second.stdout[-3000:]
    changed_tasks = re.findall(r"^TASK \[(.*?)\].*\n(?:(?!TASK).*\n)*?changed: ", second.stdout, re.M)
    assert recap(second.stdout) == {host.name: {"changed": 0, "unreachable": 0, "failed": 0} for host in fleet.hosts}, \
        changed_tasks


def test_restore_entry_point_brings_back_program_rules_and_mode_after_a_simulated_reboot(fleet, first_deploy):
    host = fleet.hosts[1]
    before, old = firewall_identity(fleet, host.name)
    wipe = host.run("ip link set eth0 xdp off && umount /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf "
                    "&& ! ip -d link show eth0 | grep -q prog/xdp && ! test -e /sys/fs/bpf/xdpfleet")
    assert wipe.rc == 0, wipe

    restored = host.run("/usr/bin/python3 /var/lib/xdpfleet/xdpfleet-restore.pyz")
    assert restored.rc == 0, restored
    assert "eth0: program xdpfleet_fw" in restored.out and "2 rules" in restored.out
    after, new = firewall_identity(fleet, host.name)
    assert new["prog_id"] != old["prog_id"]
    assert after == before


def test_rolling_update_with_a_failing_health_check_restores_that_batch_and_stops(fleet, first_deploy, tmp_path):
    servers = [subprocess.Popen(["nsenter", "-t", str(host.pid), "--net", "--mount", "--",
                                 "/usr/bin/python3", "-m", "http.server", "-b", host.address, str(HEALTH_PORT)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for host in fleet.hosts if host.name != UNHEALTHY]
    try:
        run = playbook(fleet, "update_rules.yml", tmp_path, {
            "xdp_serial": 2, "xdp_rules": RULES_V2, "xdp_health_checks": [{"tcp": HEALTH_PORT}],
            "xdp_health_timeout": 3, "xdp_health_max_drop_percent": 50, "xdp_health_window": 1})
    finally:
        for server in servers:
            server.kill()
            server.wait()
    assert run.returncode != 0
    assert "%s: health check tcp 198.18.70.13:%d from localhost failed" % (UNHEALTHY, HEALTH_PORT) in run.stdout
    assert "restored on this batch (xr-h3, xr-h4)" in run.stdout
    names = {host.name: gathered_names(fleet, host.name) for host in fleet.hosts}
    v1, v2 = [rule["name"] for rule in RULES_V1], [rule["name"] for rule in RULES_V2]
    assert names == {"xr-h1": v2, "xr-h2": v2, "xr-h3": v1, "xr-h4": v1, "xr-h5": v1}


def test_remove_leaves_no_program_pins_maps_or_state(fleet, first_deploy, tmp_path):
    facts = firewall_identity(fleet, fleet.hosts[0].name)[1]
    kernel_objects = [("prog", facts["prog_id"])] + [("map", item["id"]) for item in facts["maps"]]
    run = playbook(fleet, "remove_xdp.yml", tmp_path, {})
    assert run.returncode == 0, run.stdout[-3000:]
    left = fleet.run_parallel("ip -d link show eth0 | grep prog/xdp; ls /sys/fs/bpf/xdpfleet /etc/xdpfleet/eth0.json "
                              "/etc/xdpfleet/programs/eth0.json /var/lib/xdpfleet/xdp_firewall.o 2>/dev/null",
                              via="nsenter")
    assert {name: result.out for name, result in left.items()} == {host.name: "" for host in fleet.hosts}
    for kind, number in kernel_objects:
        assert subprocess.run(["bpftool", kind, "show", "id", str(number)], capture_output=True, check=False).returncode != 0