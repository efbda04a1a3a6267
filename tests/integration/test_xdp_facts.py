"""xdp_facts and xdp_drops on lab hosts: real packets from the client namespace, real counters.

A lab of its own (prefix xs, 198.18.60.0/24): xs-h1 runs the firewall, xs-h2 has nothing attached.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _layout
from tests.helpers.hosts import ad_hoc
from tests.lab import Lab, Layout

REPO = Path(__file__).resolve().parents[2]
LAYOUT = Layout("xs", 60)
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
UDP_PORT = 9999
RULES = [
    {"name": "no-ping-from-client", "action": "drop", "protocol": "icmp", "source": LAYOUT.client_address + "/32"},
    {"name": "no-udp-9999", "action": "drop", "protocol": "udp", "port": UDP_PORT},
    {"name": "blocklist", "action": "drop", "protocol": "udp", "source_set": "blocklist"},
]
SETS = {"blocklist": ["198.19.0.0/16", LAYOUT.client_address, "2001:db8::/32"]}
SET_PORT = 9998
JIT_SYSCTL = "/proc/sys/net/core/bpf_jit_enable"
ICMP_FRAME_BYTES = 14 + 20 + 8 + 56  # ping's default 56-byte payload in Ethernet + IPv4 + ICMP


def ansible(host, module, args, inventory=LAYOUT.inventory, check=False):
    """Runs one module on host with `ansible`; returns its result dict (with "failed" on failure)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    return ad_hoc(inventory, host, module, args, ["--check"] * check, env=env, timeout=120)


def succeeded(result):
    assert not result.get("failed"), result
    return result


def facts(host, **args):
    result = succeeded(ansible(host.name, "xdpfleet.xdp.xdp_facts", dict(dict(interfaces=["eth0"]), **args)))
    assert result["changed"] is False
    return result["ansible_facts"]["xdp"]


def eth0(host, **args):
    return facts(host, **args)["interfaces"]["eth0"]


def rule_hits(interface_facts, name):
    return next(rule for rule in interface_facts["top_rules"] if rule["name"] == name)


@pytest.fixture(scope="module")
def fleet():
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    with Lab.running(2, LAYOUT) as fleet:
        for host in fleet.hosts:
            host.run("ip link set dev eth0 xdp off; rm -rf /sys/fs/bpf/xdpfleet /etc/xdpfleet")
        yield fleet


@pytest.fixture(scope="module")
def firewall_host(fleet):
    host = fleet.hosts[0]
    succeeded(ansible(host.name, "xdpfleet.xdp.xdp_program", {"interface": "eth0", "object": str(FIREWALL)}))
    succeeded(ansible(host.name, "xdpfleet.xdp.xdp_rules",
                      {"interface": "eth0", "config": RULES, "sets": SETS, "state": "overridden", "sampling": 1}))
    return host


def ping(fleet, host, count, cpu=None):
    pin = "taskset -c %d " % cpu if cpu is not None else ""
    fleet.client.run("%sping -n -q -c %d -i 0.002 -W 0.01 %s" % (pin, count, host.address), timeout=30)


def send_udp(fleet, host, count, source_port, port=UDP_PORT):
    script = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "s.bind(('', %d)); [s.sendto(b'x' * 20, ('%s', %d)) for _ in range(%d)]"
              % (source_port, host.address, port, count))
    assert fleet.client.run("python3 -c \"%s\"" % script)[0] == 0


def test_facts_describe_the_attached_firewall(firewall_host):
    xdp = facts(firewall_host)
    facts_eth0 = xdp["interfaces"]["eth0"]
    assert facts_eth0["attached"] and facts_eth0["owner"] == "xdpfleet" and facts_eth0["firewall"]
    assert facts_eth0["name"] == facts_eth0["program"] == "xdpfleet_fw" and len(facts_eth0["tag"]) == 16
    assert len(facts_eth0["object_sha256"]) == 64 and facts_eth0["mode"] in ("native", "skb")
    assert facts_eth0["map_schema_version"] == _layout.XF_SCHEMA_VERSION  # of bpf/xdp_firewall.h
    assert {"xf_stats", "xf_hits", "xf_events"} <= {item["name"] for item in facts_eth0["maps"]}
    assert facts_eth0["rule_count"] == len(RULES) and facts_eth0["default_action"] == "pass"
    assert facts_eth0["xdp_modes"][0] == "native" and "skb" in facts_eth0["xdp_modes"]
    capabilities = xdp["capabilities"]
    assert capabilities["kernel"] == os.uname().release and capabilities["btf"] and capabilities["bpffs_mounted"]
    assert capabilities["possible_cpus"] >= capabilities["online_cpus"] >= 1


def test_exactly_n_dropped_pings_show_as_n_drops_and_n_rule_hits(fleet, firewall_host):
    before = eth0(firewall_host, xdp_modes=False)
    ping(fleet, firewall_host, 50)
    after = eth0(firewall_host, xdp_modes=False)
    assert after["stats"]["drop"]["packets"] - before["stats"]["drop"]["packets"] == 50
    assert after["stats"]["drop"]["bytes"] - before["stats"]["drop"]["bytes"] == 50 * ICMP_FRAME_BYTES
    hits_before, hits_after = (rule_hits(f, "no-ping-from-client") for f in (before, after))
    assert hits_after["packets"] - hits_before["packets"] == 50
    assert hits_after["position"] == 1 and hits_after["rule"].startswith("drop icmp from 198.18.60.2/32")
    assert after["top_rules"][0]["name"] == "no-ping-from-client"


def test_packets_on_every_cpu_are_counted(fleet, firewall_host):
    before = facts(firewall_host, per_cpu=True, xdp_modes=False)
    if before["capabilities"]["online_cpus"] < 2:
        pytest.fail("this test needs 2 CPUs to spread packets over, the machine has %d"
                    % before["capabilities"]["online_cpus"])
    for cpu in (0, 1):
        ping(fleet, firewall_host, 20 + cpu * 10, cpu=cpu)
    after = facts(firewall_host, per_cpu=True, xdp_modes=False)
    drops_before, drops_after = (f["interfaces"]["eth0"]["stats"]["drop"] for f in (before, after))
    per_cpu = [a["packets"] - b["packets"] for a, b in zip(drops_after["per_cpu"], drops_before["per_cpu"])]
    assert len(per_cpu) == after["capabilities"]["possible_cpus"]
    assert sum(per_cpu) == 50 and drops_after["packets"] - drops_before["packets"] == 50
    assert len([count for count in per_cpu if count]) >= 2, per_cpu


def test_drop_sampler_returns_the_packets_sent(fleet, firewall_host):
    succeeded(ansible(firewall_host.name, "xdpfleet.xdp.xdp_drops", {"interface": "eth0", "timeout": 0}))
    send_udp(fleet, firewall_host, 5, source_port=40123)
    result = succeeded(ansible(firewall_host.name, "xdpfleet.xdp.xdp_drops",
                               {"interface": "eth0", "count": 5, "timeout": 5}))
    assert result["changed"] is True and result["sample_rate"] == 1
    assert len(result["events"]) == 5
    for event in result["events"]:
        assert (event["source"], event["destination"]) == (fleet.client.address, firewall_host.address)
        assert (event["protocol"], event["source_port"], event["destination_port"]) == ("udp", 40123, UDP_PORT)
        assert (event["rule_id"], event["rule_name"], event["interface"]) == (2, "no-udp-9999", "eth0")


def drops(host, check=False, **args):
    return succeeded(ansible(host.name, "xdpfleet.xdp.xdp_drops", dict(dict(interface="eth0", timeout=0), **args),
                             check=check))


def test_check_mode_shows_the_drops_a_read_would_take_and_leaves_them(fleet, firewall_host):
    drops(firewall_host)
    send_udp(fleet, firewall_host, 3, source_port=40124)
    predicted = drops(firewall_host, check=True, count=3, timeout=5)
    taken = drops(firewall_host)
    assert predicted["changed"] is True and taken["changed"] is True
    assert [event["source_port"] for event in predicted["events"]] == [40124] * 3
    assert [event["timestamp_ns"] for event in predicted["events"]] == [event["timestamp_ns"]
                                                                        for event in taken["events"]]
    emptied = drops(firewall_host)
    assert emptied["events"] == [] and emptied["changed"] is False
    assert drops(firewall_host, check=True)["changed"] is False


def test_a_read_of_count_events_leaves_the_later_ones_for_the_next_read(fleet, firewall_host):
    drops(firewall_host)
    send_udp(fleet, firewall_host, 8, source_port=40125)
    first = drops(firewall_host, count=5, timeout=5)
    rest = drops(firewall_host)
    assert (len(first["events"]), len(rest["events"])) == (5, 3)
    assert first["events"][-1]["timestamp_ns"] < rest["events"][0]["timestamp_ns"]


def test_jit_is_known_from_the_attached_program_where_the_sysctl_is_absent(fleet, firewall_host):
    """A lab host is a network namespace, and net.core.bpf_jit_enable exists only in the initial one."""
    assert firewall_host.run("test -e %s" % JIT_SYSCTL).rc != 0
    jit_on = Path(JIT_SYSCTL).read_text().strip() != "0"  # this machine's setting, seen from the initial namespace
    assert facts(firewall_host)["capabilities"]["jit_enabled"] is (True if jit_on else None)
    assert facts(fleet.hosts[1])["capabilities"]["jit_enabled"] is None  # nothing attached: nothing tells


def test_nothing_attached_is_empty_not_an_error(fleet):
    facts_eth0 = eth0(fleet.hosts[1])
    assert facts_eth0["attached"] is False and facts_eth0["firewall"] is False
    assert facts_eth0["stats"] == {} and facts_eth0["top_rules"] == [] and facts_eth0["maps"] == []


def test_a_set_rule_counts_the_real_packets_from_its_members_and_facts_show_the_set(fleet, firewall_host):
    before = rule_hits(eth0(firewall_host, xdp_modes=False), "blocklist")
    send_udp(fleet, firewall_host, 6, source_port=40126, port=SET_PORT)
    after = eth0(firewall_host, xdp_modes=False)
    assert rule_hits(after, "blocklist")["packets"] - before["packets"] == 6
    assert rule_hits(after, "blocklist")["rule"] == "drop udp from set blocklist to any"
    assert after["sets"] == {"blocklist": 3}


def test_facts_from_the_kernel_alone_when_pins_and_state_are_gone(fleet, firewall_host):
    before = eth0(firewall_host, xdp_modes=False)
    firewall_host.run("mkdir /run/state-away && mv /etc/xdpfleet/eth0.* /run/state-away/; rm -rf /sys/fs/bpf/xdpfleet/eth0")
    try:
        ping(fleet, firewall_host, 7)
        after = eth0(firewall_host, xdp_modes=False)
    finally:
        firewall_host.run("mv /run/state-away/* /etc/xdpfleet/ && rmdir /run/state-away")
        succeeded(ansible(firewall_host.name, "xdpfleet.xdp.xdp_program",
                          {"interface": "eth0", "object": str(FIREWALL)}))
    assert after["prog_id"] == before["prog_id"] and after["owner"] == "xdpfleet"
    assert after["rule_count"] == len(RULES)
    assert after["stats"]["drop"]["packets"] - before["stats"]["drop"]["packets"] == 7
    top = after["top_rules"][0]
    assert top["name"] is None and top["position"] == 1 and top["rule"].startswith("drop icmp")


def test_check_mode_and_facts_modules(fleet, firewall_host):
    result = succeeded(ansible(firewall_host.name, "xdpfleet.xdp.xdp_facts", {}, check=True))
    assert result["changed"] is False and "eth0" in result["ansible_facts"]["xdp"]["interfaces"]
    with tempfile.TemporaryDirectory() as tree:
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
                   ANSIBLE_FACTS_MODULES="ansible.builtin.setup,xdpfleet.xdp.xdp_facts",
                   ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.tree",
                   ANSIBLE_CALLBACK_TREE_DIR=tree)
        done = subprocess.run([str(REPO / ".venv" / "bin" / "ansible"), "-i", str(LAYOUT.inventory),
                               firewall_host.name, "-m", "ansible.builtin.gather_facts"],
                              capture_output=True, text=True, env=env, timeout=120, cwd=REPO, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        gathered = json.loads((Path(tree) / firewall_host.name).read_text())["ansible_facts"]
    assert gathered["xdp"]["interfaces"]["eth0"]["firewall"] and gathered["ansible_hostname"] == firewall_host.name
