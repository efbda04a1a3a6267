"""The playbooks end to end.

On a lab of their own (5 hosts, 198.18.70.0/24): deploy twice, a boot-time restore, a rolling update whose
health check fails on one host, removal. On the session lab (xf, 3 hosts): what the playbooks refuse before
they touch a host, check mode of every playbook, and what removal leaves behind."""

import json
import re
import subprocess

import pytest
import yaml

from tests.helpers.hosts import ansible_env, playbook, playbook_command, recap, write_variables
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
    with Lab.running(HOSTS, LAYOUT) as lab:
        yield lab


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


def test_a_set_from_a_file_rolls_through_the_fleet_and_an_unchanged_run_changes_nothing(
        fleet, first_deploy, tmp_path):
    blocklist = tmp_path / "drop.txt"
    networks = "".join("198.19.%d.0/24 ; net %d\n" % (n, n) for n in range(200))
    blocklist.write_text("# blocklist\n198.18.99.0/24\n" + networks)
    variables = {"xdp_serial": "100%", "xdp_sets": {"blocklist": {"file": str(blocklist)}},
                 "xdp_rules": RULES_V1 + [{"name": "blocklist", "action": "drop", "source_set": "blocklist"}]}
    first = playbook(fleet, "update_rules.yml", tmp_path, variables)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    for host in fleet.hosts:
        gathered = module(fleet, host.name, "xdpfleet.xdp.xdp_rules", {"interface": "eth0", "state": "gathered"})
        assert gathered["gathered"][-1] == {"name": "blocklist", "action": "drop", "source_set": "blocklist"}
        assert gathered["sets"]["blocklist"]["entries"] == 201
    second = playbook(fleet, "update_rules.yml", tmp_path, variables)
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap(second.stdout) == {host.name: {"changed": 0, "unreachable": 0, "failed": 0} for host in fleet.hosts}


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


# --- on the session lab: refusals before a host is touched, check mode, what removal leaves ------------------

FOOTPRINT = ("ip -d link show eth0 | grep -o 'prog/xdp id [0-9]*'; "
             "find /etc/xdpfleet /var/lib/xdpfleet /sys/fs/bpf/xdpfleet -mindepth 1 2>/dev/null | sort; "
             "find /etc/xdpfleet /var/lib/xdpfleet -type f -exec sha256sum {} + 2>/dev/null | sort; "
             "bpftool map dump pinned /sys/fs/bpf/xdpfleet/eth0/xf_config 2>/dev/null")
TEXTFILE = "/var/lib/xdpfleet/textfile_collector/xdpfleet.prom"  # stats_textfile_path of the lab inventory
BAD_ADDRESS = "is not an IPv4/IPv6 address"


def footprint(lab):
    """Per host: the program on eth0, the firewall's files and pins, the digests of its files, its config map."""
    return {name: result.out for name, result in lab.run_parallel(FOOTPRINT, via="nsenter").items()}


def output(run):
    return run.stdout + run.stderr


def unchanged_everywhere(lab):
    return {host.name: {"changed": 0, "unreachable": 0, "failed": 0} for host in lab.hosts}


def deploy(lab, directory, rules):
    run = playbook(lab, "deploy_xdp.yml", directory, {"xdp_rules": rules})
    assert run.returncode == 0, output(run)[-3000:]
    return lab


@pytest.fixture(scope="module")
def bare(lab, tmp_path_factory):
    """The session lab without the firewall, for tests that change nothing on its hosts."""
    run = playbook(lab, "remove_xdp.yml", tmp_path_factory.mktemp("remove"), {})
    assert run.returncode == 0, output(run)[-3000:]
    assert all("prog/xdp" not in text for text in footprint(lab).values())
    return lab


@pytest.fixture(scope="module")
def deployed_once(lab, tmp_path_factory):
    """The session lab with the firewall and RULES_V1, for tests that change nothing on its hosts."""
    return deploy(lab, tmp_path_factory.mktemp("deploy"), RULES_V1)


@pytest.fixture
def deployed(lab, tmp_path):
    """The session lab with the firewall and RULES_V1, for a test that changes it."""
    return deploy(lab, tmp_path, RULES_V1)


def test_deploy_with_an_invalid_rule_touches_no_host(bare, tmp_path):
    before = footprint(bare)
    bad = RULES_V1 + [{"name": "typo", "action": "drop", "source": "198.18.300.0/24"}]
    run = playbook(bare, "deploy_xdp.yml", tmp_path, {"xdp_rules": bad})
    assert run.returncode != 0
    assert "config[2].source: '198.18.300.0/24' %s" % BAD_ADDRESS in output(run)
    assert footprint(bare) == before


def refused_with_a_few_of_many_problems(lab, name, directory):
    """Runs a playbook with 1,000 bad rules: it must fail, show only some of the problems, and change nothing."""
    bad = [{"name": "bad-%d" % index, "action": "drop", "source": "198.18.%d.0/24" % (300 + index)}
           for index in range(1000)]
    before = footprint(lab)
    run = playbook(lab, name, directory, {"xdp_rules": RULES_V1 + bad})
    assert run.returncode != 0
    shown = output(run).count(BAD_ADDRESS)
    assert 0 < shown <= 100 * len(lab.hosts), "%d messages about bad addresses" % shown
    assert footprint(lab) == before


def test_deploy_with_many_invalid_rules_reports_a_few_of_them(bare, tmp_path):
    refused_with_a_few_of_many_problems(bare, "deploy_xdp.yml", tmp_path)


def test_deploy_in_check_mode_reports_the_attach_and_the_rules_and_changes_nothing(bare, tmp_path):
    before = footprint(bare)
    run = playbook(bare, "deploy_xdp.yml", tmp_path, {"xdp_rules": RULES_V1}, "--check", "--diff")
    assert run.returncode == 0, output(run)[-3000:]
    assert all(counts["changed"] > 0 for counts in recap(run.stdout).values()), run.stdout[-3000:]
    assert "+ drop icmp from any to any (no-ping) (at 1)" in run.stdout
    assert footprint(bare) == before


def test_deploy_in_check_mode_on_deployed_hosts_reports_only_the_rule_change(deployed_once, tmp_path):
    before = footprint(deployed_once)
    same = playbook(deployed_once, "deploy_xdp.yml", tmp_path, {"xdp_rules": RULES_V1}, "--check")
    assert same.returncode == 0, output(same)[-3000:]
    assert recap(same.stdout) == unchanged_everywhere(deployed_once)
    more = playbook(deployed_once, "deploy_xdp.yml", tmp_path, {"xdp_rules": RULES_V2}, "--check", "--diff")
    assert more.returncode == 0, output(more)[-3000:]
    assert all(counts["changed"] == 1 for counts in recap(more.stdout).values()), more.stdout[-3000:]
    assert "+ drop udp from any to any port 53 (no-dns) (at 3)" in more.stdout
    assert footprint(deployed_once) == before


def set_file_update(lab, directory, text, *options):
    """update_rules.yml with RULES_V1 plus a rule that drops the sources of a set read from a file."""
    path = directory / "drop.txt"
    path.write_text(text)
    return playbook(lab, "update_rules.yml", directory, {
        "xdp_sets": {"blocklist": {"file": str(path)}},
        "xdp_rules": RULES_V1 + [{"name": "blocklist", "action": "drop", "source_set": "blocklist"}]}, *options)


def test_a_bad_line_in_a_set_file_is_refused_naming_file_and_line_and_changes_nothing(deployed_once, tmp_path):
    before = footprint(deployed_once)
    run = set_file_update(deployed_once, tmp_path, "# drop\n198.19.0.0/16\n198.19.0.5/24\n")
    assert run.returncode != 0
    assert "%s line 3: 198.19.0.5/24 has host bits set (did you mean 198.19.0.0/24?)" % (tmp_path / "drop.txt") \
        in output(run)
    assert footprint(deployed_once) == before


def test_a_set_file_in_check_mode_shows_its_entries_and_changes_nothing(deployed_once, tmp_path):
    before = footprint(deployed_once)
    run = set_file_update(deployed_once, tmp_path, "198.19.0.0/16\n198.19.1.0/24\n2001:db8::/32\n", "--check",
                          "--diff")
    assert run.returncode == 0, output(run)[-3000:]
    assert "~ set blocklist: 2 entries, 2 added, 0 removed" in run.stdout and "+   2001:db8::/32" in run.stdout
    assert footprint(deployed_once) == before


def test_update_rules_in_check_mode_reports_the_change_and_changes_nothing(deployed_once, tmp_path):
    before = footprint(deployed_once)
    run = playbook(deployed_once, "update_rules.yml", tmp_path,
                   {"xdp_rules": RULES_V2, "xdp_health_checks": [{"tcp": 1}]}, "--check", "--diff")
    assert run.returncode == 0, output(run)[-3000:]
    assert all(counts["changed"] == 1 for counts in recap(run.stdout).values()), run.stdout[-3000:]
    assert "+ drop udp from any to any port 53 (no-dns) (at 3)" in run.stdout
    assert footprint(deployed_once) == before


def test_update_rules_with_many_invalid_rules_reports_a_few_of_them(deployed_once, tmp_path):
    refused_with_a_few_of_many_problems(deployed_once, "update_rules.yml", tmp_path)


def test_gather_stats_in_check_mode_writes_no_report_and_no_textfile(deployed_once, tmp_path):
    before = footprint(deployed_once)
    reports = tmp_path / "reports"
    run = playbook(deployed_once, "gather_stats.yml", tmp_path, {"stats_report_dir": str(reports)}, "--check")
    assert run.returncode == 0, output(run)[-3000:]
    assert all(counts["changed"] > 0 for counts in recap(run.stdout).values()), run.stdout[-3000:]
    assert not reports.exists()
    assert footprint(deployed_once) == before


def test_remove_xdp_in_check_mode_reports_the_removal_and_changes_nothing(deployed_once, tmp_path):
    before = footprint(deployed_once)
    run = playbook(deployed_once, "remove_xdp.yml", tmp_path, {}, "--check")
    assert run.returncode == 0, output(run)[-3000:]
    assert all(counts["changed"] > 0 for counts in recap(run.stdout).values()), run.stdout[-3000:]
    assert footprint(deployed_once) == before


@pytest.mark.parametrize("name", ["deploy_xdp.yml", "update_rules.yml"])
def test_an_empty_rule_set_over_rules_needs_xdp_allow_empty(deployed, tmp_path, name):
    before = footprint(deployed)
    run = playbook(deployed, name, tmp_path, {"xdp_rule": RULES_V2})  # misspelled: xdp_rules keeps its default []
    assert run.returncode != 0
    assert "xdp_rules is empty, and eth0 holds 2 rules" in output(run)
    assert "xdp_allow_empty: true" in output(run)
    assert "blocked-net" not in output(run)  # the refusal names the count, not the rules
    assert footprint(deployed) == before

    allowed = playbook(deployed, name, tmp_path, {"xdp_allow_empty": True})
    assert allowed.returncode == 0, output(allowed)[-3000:]
    assert {host.name: gathered_names(deployed, host.name) for host in deployed.hosts} == \
        {host.name: [] for host in deployed.hosts}


def test_gather_stats_without_a_report_dir_writes_nothing_into_the_collection(lab, tmp_path):
    """The lab inventory names a report directory; an inventory that does not must say where reports go."""
    inventory = yaml.safe_load(lab.inventory.read_text())
    inventory["all"]["children"]["lab"]["vars"].pop("stats_report_dir", None)
    user_inventory = tmp_path / "hosts.yml"
    user_inventory.write_text(yaml.safe_dump(inventory))
    collection_before = sorted(str(path) for path in REPO.rglob("report.*") if ".venv" not in path.parts)
    argv = playbook_command(user_inventory, REPO / "playbooks" / "gather_stats.yml",
                            write_variables(tmp_path, "gather_stats", {}))
    run = subprocess.run(argv, cwd=tmp_path, env=ansible_env(), capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode != 0
    assert "stats_report_dir" in output(run)
    assert sorted(str(path) for path in REPO.rglob("report.*") if ".venv" not in path.parts) == collection_before


def test_the_next_program_slot_is_built_in_only_when_asked(deployed, tmp_path):
    """xdp_firewall_next_slot: the default build leaves xf_next out; asked, an upgrade in place pins it."""
    slot = "test -e /sys/fs/bpf/xdpfleet/eth0/xf_next"
    assert all(result.rc != 0 for result in deployed.run_parallel(slot, via="nsenter").values())
    run = playbook(deployed, "deploy_xdp.yml", tmp_path, {"xdp_rules": RULES_V1, "xdp_firewall_next_slot": True})
    assert run.returncode == 0, output(run)[-3000:]
    assert all(result.rc == 0 for result in deployed.run_parallel(slot, via="nsenter").values())


def test_remove_leaves_no_rule_names_and_no_textfile_that_says_attached(deployed, tmp_path):
    stats = playbook(deployed, "gather_stats.yml", tmp_path, {"stats_report_dir": str(tmp_path / "reports")})
    assert stats.returncode == 0, output(stats)[-3000:]
    assert all("xdpfleet_program_attached{" in deployed_host.run("cat %s" % TEXTFILE).out
               for deployed_host in deployed.hosts)

    run = playbook(deployed, "remove_xdp.yml", tmp_path, {})
    assert run.returncode == 0, output(run)[-3000:]
    left = deployed.run_parallel("ls /etc/xdpfleet/eth0.names 2>/dev/null; grep '^xdpfleet_program_attached{' %s "
                                 "2>/dev/null | grep -v ' 0$'" % TEXTFILE, via="nsenter")
    assert {name: result.out for name, result in left.items()} == {host.name: "" for host in deployed.hosts}


def test_a_users_inventory_group_named_lab_gets_the_role_defaults(tmp_path):
    """The collection's playbooks carry no group_vars: a group of a user's inventory named like the lab's gets
    no lab settings."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"lab": {"hosts": {"edge-1": {}}}}}}))
    run = subprocess.run(["ansible-inventory", "-i", str(inventory), "--playbook-dir", str(REPO / "playbooks"),
                          "--host", "edge-1"], cwd=tmp_path, env=ansible_env(), capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(run.stdout) == {}
