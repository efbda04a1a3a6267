"""xdpfleet.xdp.xdp_rules on a lab host: real kernel, real SSH, ansible from the controller, traffic from
the client namespace.

The suite runs on a lab of its own (prefix xw, 198.18.90.0/24): the controller is 198.18.90.1 (the
bridge), the client 198.18.90.2, the host 198.18.90.11; check mode where the firewall is not attached, on a
host of the session lab.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.hosts import PYTHON, ad_hoc, module_env, on_host, run_module
from tests.helpers.traffic import Stream
from tests.lab import Lab, Layout

REPO = Path(__file__).resolve().parents[2]
LAYOUT = Layout("xw", 90)
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
CONTROLLER = LAYOUT.bridge_address
CLIENT = LAYOUT.client_address
SSH_PASS = {"name": "ssh", "action": "pass", "source": CONTROLLER + "/32", "protocol": "tcp", "port": 22}


@pytest.fixture(scope="module")
def fleet():
    with Lab.running(1, LAYOUT) as lab:
        yield lab


@pytest.fixture(scope="module")
def host(fleet):
    """The lab host with the firewall attached to eth0 and no rules nor desired-state file."""
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    host = fleet.hosts[0]
    host.run("rm -f /etc/xdpfleet/eth0.json")
    succeeded(ansible(host, "xdp_program", interface="eth0", object=str(FIREWALL)))
    return host


@pytest.fixture
def rules_host(host):
    """The host, its rule set emptied before the test."""
    succeeded(rules(host, state="overridden", config=[], default_action="pass", sampling=0))
    return host


def ansible_env(**extra):
    return dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **extra)


def ansible(host, module_name, check=False, diff=False, **args):
    """Runs xdpfleet.xdp.<module_name> on host with `ansible` over SSH; returns its result dict."""
    return ad_hoc(LAYOUT.inventory, host.name, "xdpfleet.xdp." + module_name, args,
                  ["--check"] * check + ["--diff"] * diff, env=ansible_env())


def rules(host, check=False, diff=False, **args):
    return ansible(host, "xdp_rules", check, diff, **dict(dict(interface="eth0"), **args))


def succeeded(result):
    assert not result.get("failed"), result
    return result


def hits_by_port(host):
    """{rule port or protocol: packets counted for that rule} of the active rule set."""
    return json.loads(on_host(host, """
        import json
        from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel
        with _fw_kernel.pinned_maps("/sys/fs/bpf/xdpfleet/eth0") as maps:
            kernel = _fw_kernel.KernelRuleset(maps)
            counters = kernel.counters()
            hits = _fw_kernel.PerCpuRecords(maps["xf_hits"], max(counters) + 1).packets()
        rules = [kernel.rule_at(number)[0] for number in range(len(kernel))]
        print(json.dumps(dict((str(rule.port or rule.protocol), hits[counter])
                              for rule, counter in zip(rules, counters))))
    """))


# --- the five states, each run twice, check mode and diff: one playbook --------------------------

ICMP = {"name": "icmp", "action": "drop", "protocol": "icmp"}
NET = {"action": "drop", "source": "198.19.0.0/16"}
WEB = {"action": "pass", "protocol": "tcp", "port": "80-443"}
DNS = {"action": "drop", "protocol": "udp", "port": 53}
REPLACEMENTS = [{"name": "icmp", "action": "drop", "protocol": "icmp"},
                {"name": "ssh", "action": "pass", "protocol": "tcp", "port": 22}]


def twice(name, **args):
    task = {"xdpfleet.xdp.xdp_rules": dict(interface="eth0", **args)}
    return [dict(task, name="%s %s" % (name, run), register="%s_%s" % (name, run)) for run in (1, 2)]


PLAY_TASKS = (
    twice("overridden", state="overridden", config=[SSH_PASS, ICMP, NET])
    + twice("merged", state="merged", config=[SSH_PASS, WEB, dict(ICMP, action="pass")])
    + twice("replaced", state="replaced", config=REPLACEMENTS)
    + [{"name": "check", "check_mode": True, "diff": True, "register": "check",
        "xdpfleet.xdp.xdp_rules": {"interface": "eth0", "config": [DNS]}}]
    + twice("gathered", state="gathered")
    + twice("fewer", state="overridden", config=[SSH_PASS, NET, WEB])
    + twice("deleted", state="deleted", config=[{"source": "198.19.0.0/16"}])
    + twice("gathered_after_delete", state="gathered")
)


def test_each_state_twice_check_mode_and_diff(rules_host, tmp_path):
    names = [task["register"] for task in PLAY_TASKS]
    save = {"name": "save", "delegate_to": "localhost", "become": False,
            "ansible.builtin.copy": {"dest": str(tmp_path / "results.json"),
                                     "content": "{{ %s | to_json }}" % ("{" + ", ".join(
                                         "'%s': %s" % (name, name) for name in names) + "}")}}
    playbook = tmp_path / "states.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": rules_host.name, "gather_facts": False,
                                         "tasks": PLAY_TASKS + [save]}], sort_keys=False))
    done = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(LAYOUT.inventory),
                           str(playbook)], capture_output=True, text=True, env=ansible_env(), timeout=600, cwd=REPO,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "results.json").read_text())

    for name in set(name.rsplit("_", 1)[0] for name in names if name != "check"):
        assert not result[name + "_2"]["changed"], name
        assert "after" not in result[name + "_2"], name
    assert result["overridden_1"]["after"] == [SSH_PASS, ICMP, NET]
    assert result["merged_1"]["after"] == [SSH_PASS, WEB, dict(ICMP, action="pass"), NET]
    assert result["merged_1"]["summary"] == {"added": 1, "removed": 0, "changed": 1}
    assert result["replaced_1"]["after"] == [REPLACEMENTS[1], WEB, REPLACEMENTS[0], NET]
    assert result["check"]["changed"] and result["check"]["after"][-1] == DNS
    assert result["check"]["diff"]["prepared"] == "+ drop udp from any to any port 53 (at 5)"
    assert result["gathered_1"]["gathered"] == result["replaced_1"]["after"]
    assert result["fewer_1"]["after"] == [SSH_PASS, NET, WEB]
    assert result["fewer_1"]["summary"] == {"added": 0, "removed": 1, "changed": 2}
    assert result["gathered_after_delete_1"]["gathered"] == [SSH_PASS, WEB]


# --- lockout guard over the real SSH connection -------------------------------------------------------


def test_lockout_guard_fires_over_ssh_and_not_when_a_rule_spares_it(rules_host):
    refused = rules(rules_host, state="overridden", default_action="drop", config=[WEB])
    assert refused["failed"] and "the default action drop would drop this SSH connection" in refused["msg"]
    assert "tcp from %s port" % CONTROLLER in refused["msg"]
    refused = rules(rules_host, state="overridden",
                    config=[{"name": "no-ssh", "action": "drop", "protocol": "tcp", "port": "1-1024"}])
    assert refused["failed"] and refused["msg"].startswith("rule 1 (drop tcp from any to any port 1-1024 (no-ssh))")
    assert rules(rules_host, state="gathered")["gathered"] == []
    spared = succeeded(rules(rules_host, state="overridden", default_action="drop", config=[SSH_PASS, WEB]))
    assert spared["changed"] and spared["default_action"] == "drop"


# --- check mode before the firewall is attached ---------------------------------------------------------------


def test_check_mode_without_the_firewall_plans_against_what_attaching_it_gives(lab):
    """A check-mode play that would attach the firewall and then apply rules can report (and check) both."""
    host = lab.hosts[-1]
    succeeded(run_module(host, "xdp_program", {"interface": "eth0", "state": "detached"}))
    ssh = module_env(SSH_CONNECTION="%s 40000 %s 22" % (lab.layout.bridge_address, host.address))

    def planned(check=True, env=None, **args):
        return run_module(host, "xdp_rules", dict(dict(interface="eth0", state="overridden"), **args), check=check,
                          env=env)

    plan = succeeded(planned(config=[SSH_PASS, WEB], sampling=8, env=ssh))
    assert plan["changed"] and plan["before"] == [] and plan["after"] == [SSH_PASS, WEB]
    assert (plan["default_action"], plan["sampling"]) == ("pass", 8)
    empty = succeeded(planned(config=[]))
    assert not empty["changed"] and empty["rule_count"] == {"before": 0, "after": 0}
    bad = planned(config=[WEB, {"action": "drop", "source": "198.18.300.0/24"}])
    assert bad["failed"] and bad["msg"].startswith("config[1].source: '198.18.300.0/24' is not an IPv4/IPv6")
    locked = planned(config=[WEB], default_action="drop", env=ssh)
    assert locked["failed"] and "the default action drop would drop this SSH connection" in locked["msg"]
    applied = planned(check=False, config=[WEB])
    assert applied["failed"] and "the xdpfleet firewall is not attached" in applied["msg"]


# --- traffic from the client namespace ------------------------------------------------------------------


@pytest.fixture
def web_servers(rules_host):
    servers = [subprocess.Popen(["nsenter", "-t", str(rules_host.pid), "--net", "--mount", "--", PYTHON,
                                 "-m", "http.server", "-b", rules_host.address, str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in (80, 8080, 8081)]
    time.sleep(1.5)
    yield rules_host
    for server in servers:
        server.terminate()
        server.wait()


def reaches(fleet, host, port, attempts=1):
    """Whether an HTTP request from the client gets an answer; a loaded machine may need attempts."""
    command = "curl -s -o /dev/null -m 2 http://%s:%d/" % (host.address, port)
    return any(fleet.client.run(command).rc == 0 for attempt in range(attempts))


def pings(fleet, host, attempts=1):
    return any(fleet.client.run("ping -c 1 -W 1 %s" % host.address).rc == 0 for attempt in range(attempts))


@pytest.fixture(params=["native", "skb"])
def attach_mode(request, host):
    """The firewall attached in each XDP mode in turn. A mode switch cannot be atomic, so it detaches first;
    the test applies its rules after."""
    if request.param != "native":
        reattach(host, request.param)
    yield request.param
    if request.param != "native":
        reattach(host, "native")


def reattach(host, mode):
    succeeded(ansible(host, "xdp_program", interface="eth0", state="detached"))
    attached = succeeded(ansible(host, "xdp_program", interface="eth0", object=str(FIREWALL), mode=mode))
    assert attached["mode"] == mode


def test_traffic_verdicts_from_the_client(fleet, web_servers, attach_mode):
    """Through the general index, the IPv4 host table (an address with one rule, and one with several) and the
    trie, in native and in generic (skb) mode."""
    host = web_servers
    assert reaches(fleet, host, 80, 3) and reaches(fleet, host, 8080, 3) and pings(fleet, host, 3)
    pass_8081 = {"name": "8081", "action": "pass", "source": CLIENT + "/32", "protocol": "tcp", "port": 8081}
    denied = {"name": "denied", "action": "drop", "source": "198.18.90.2/31"}
    succeeded(rules(host, state="overridden", config=[
        SSH_PASS, {"action": "pass", "source": CLIENT + "/32", "protocol": "tcp", "port": 80}, pass_8081,
        ICMP, denied]))
    assert not pings(fleet, host), "ping passed an ICMP drop rule"
    assert reaches(fleet, host, 80, 3), "HTTP was dropped"
    assert not reaches(fleet, host, 8080), "the denied CIDR got through"
    assert reaches(fleet, host, 8081, 3), "the pass rule before the overlapping drop was not honoured"
    succeeded(rules(host, state="overridden", config=[SSH_PASS, denied, pass_8081]))
    assert not reaches(fleet, host, 8081), "the drop rule placed first did not win"


def test_hit_counters_survive_a_merged_update(fleet, rules_host):
    succeeded(rules(rules_host, state="overridden", config=[SSH_PASS, ICMP]))
    fleet.client.run("ping -c 3 -i 0.2 -W 1 %s" % rules_host.address)
    assert hits_by_port(rules_host)["1"] == 3
    succeeded(rules(rules_host, state="merged", config=[DNS, ICMP]))
    fleet.client.run("ping -c 2 -i 0.2 -W 1 %s" % rules_host.address)
    counts = hits_by_port(rules_host)
    assert counts["1"] == 5 and counts["(53, 53)"] == 0


# --- atomicity: flip between two sets while two streams flow ------------------------------------------------

STREAM_PASS, STREAM_DROP = 5001, 5002


def flip_sets():
    """Both sets pass STREAM_PASS and drop STREAM_DROP from the client, through different rules and
    positions, so that a packet classified by a mixture of the two could get another verdict."""
    client = CLIENT + "/32"
    set_a = [SSH_PASS,
             {"action": "pass", "source": client, "protocol": "udp", "port": STREAM_PASS},
             {"action": "drop", "protocol": "udp", "port": "5000-5010"}]
    set_b = [SSH_PASS,
             {"action": "drop", "source": client, "protocol": "udp", "port": STREAM_DROP},
             {"action": "drop", "source": "198.18.90.0/24", "protocol": "udp", "port": "5003-5010"},
             {"action": "pass", "protocol": "udp", "port": "5000-5001"},
             {"action": "drop", "protocol": "udp"}]
    return set_a, set_b


FLIPPER = """
import json, sys
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_run
set_a, set_b = json.loads(sys.argv[1])
switches = 0
for flip in range(100):
    result = _fw_run.run({"interface": "eth0", "state": "overridden", "config": set_b if flip % 2 else set_a})
    switches += result["changed"]
print(switches)
"""


def flips_under_a_stream(fleet, host, tmp_path, flipper):
    """Runs a flipper script between flip_sets() on the host while both streams flow; returns what it printed
    after checking that every packet got the verdict both sets give it."""
    set_a, set_b = flip_sets()
    succeeded(rules(host, state="overridden", config=set_b))
    stream = Stream(fleet, host, [STREAM_PASS, STREAM_DROP], tmp_path / "stop", pause=0.001)
    try:
        printed = on_host(host, "import sys; sys.argv[1:] = [%r]\n" % json.dumps([set_a, set_b]) + flipper,
                          timeout=600)
    finally:
        sent, (received_pass, received_drop) = stream.stop()
    assert sent > 1000, "the stream was too thin to test anything"
    assert (received_pass, received_drop) == (sent, 0), \
        "sent %d on each stream; received %d that both sets pass, %d that both drop; eth0: %s" % (
            sent, received_pass, received_drop, host.run("ethtool -S eth0 | grep -i drop").out.split())
    return printed


def test_rule_set_switch_is_atomic_for_packets(fleet, rules_host, tmp_path):
    assert int(flips_under_a_stream(fleet, rules_host, tmp_path, FLIPPER)) == 100


# --- shadow rule sets: counted while the enforced set decides, then promoted in one switch ---------------------

SHADOWED_PORT = 5003


def flow(fleet, host, tmp_path, port=SHADOWED_PORT, seconds=1.0):
    """(datagrams sent, received) of a short UDP stream from the client to port."""
    stream = Stream(fleet, host, [port], tmp_path / ("stop-%d-%f" % (port, time.time())))
    time.sleep(seconds)
    sent, (received,) = stream.stop()
    return sent, received


def shadow_facts(host):
    return succeeded(ansible(host, "xdp_facts", interfaces=["eth0"], xdp_modes=False))[
        "ansible_facts"]["xdp"]["interfaces"]["eth0"]["shadow"]


def test_a_shadow_set_counts_what_it_would_drop_and_promote_enforces_it(fleet, rules_host, tmp_path):
    enforced = [SSH_PASS, {"name": "flow", "action": "pass", "protocol": "udp", "port": SHADOWED_PORT}]
    shadow = [SSH_PASS, {"name": "no-flow", "action": "drop", "protocol": "udp", "port": SHADOWED_PORT}]
    succeeded(rules(rules_host, state="overridden", config=enforced, sampling=1))
    installed = succeeded(rules(rules_host, mode="shadow", state="overridden", config=shadow))
    assert installed["changed"] and installed["mode"] == "shadow"
    assert [rule["action"] for rule in installed["before"] + installed["after"]] == ["pass", "pass", "pass", "drop"]
    assert not succeeded(rules(rules_host, mode="shadow", state="overridden", config=shadow))["changed"]
    sent, received = flow(fleet, rules_host, tmp_path)
    assert sent > 100 and received == sent, "the enforced set passes the flow: sent %d, received %d" % (sent, received)
    counts = shadow_facts(rules_host)
    assert counts["new_drops"]["packets"] == sent and counts["new_passes"]["packets"] == 0, counts
    assert [rule["packets"] for rule in counts["top_rules"] if rule["name"] == "no-flow"] == [sent], counts
    events = succeeded(ansible(rules_host, "xdp_drops", interface="eth0"))["events"]
    assert sum(event["shadow"] and event["rule_name"] == "no-flow" for event in events) == sent
    assert not any(not event["shadow"] for event in events), "the enforced set dropped packets of the flow"

    promoted = succeeded(rules(rules_host, mode="promote"))
    assert promoted["changed"] and [rule["action"] for rule in promoted["after"]] == ["pass", "drop"]
    assert succeeded(rules(rules_host, state="gathered"))["gathered"][1]["action"] == "drop"
    assert flow(fleet, rules_host, tmp_path)[1] == 0, "the promoted set let the flow through"
    assert shadow_facts(rules_host) is None
    assert not succeeded(rules(rules_host, mode="promote"))["changed"]


def test_discard_and_an_enforced_change_end_the_shadow(rules_host):
    succeeded(rules(rules_host, state="overridden", config=[SSH_PASS]))
    succeeded(rules(rules_host, mode="shadow", state="merged", config=[ICMP]))
    discarded = succeeded(rules(rules_host, mode="discard", check=True))
    assert discarded["changed"] and shadow_facts(rules_host) is not None
    assert succeeded(rules(rules_host, mode="discard"))["changed"] and shadow_facts(rules_host) is None
    assert not succeeded(rules(rules_host, mode="discard"))["changed"]
    succeeded(rules(rules_host, mode="shadow", state="merged", config=[ICMP]))
    assert succeeded(rules(rules_host, state="merged", config=[DNS]))["shadow_discarded"]
    assert shadow_facts(rules_host) is None
    refused = rules(rules_host, mode="promote", config=[DNS])
    assert refused.get("failed") and "mode: promote acts on the installed shadow set" in refused["msg"], refused


SHADOW_FLIPPER = """
import json, sys
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_run
set_a, set_b = json.loads(sys.argv[1])
promoted = 0
for flip in range(60):
    config = set_b if flip % 2 else set_a
    _fw_run.run({"interface": "eth0", "mode": "shadow", "state": "overridden", "config": config})
    promoted += _fw_run.run({"interface": "eth0", "mode": "promote", "state": "merged"})["changed"]
print(promoted)
"""


def test_promote_is_atomic_for_packets(fleet, rules_host, tmp_path):
    assert int(flips_under_a_stream(fleet, rules_host, tmp_path, SHADOW_FLIPPER)) == 60
