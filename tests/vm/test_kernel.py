"""Kernel compatibility on Debian 12's stock kernel (6.1) in a qemu guest booted by tests/vm: program
load and atomic upgrade, the rule states, facts counting real packets. The same modules run on the
lab's kernel in test_xdp_program/test_xdp_rules/test_xdp_facts; here a verifier or helper difference
of 6.1 shows up as a failure. One playbook run (one SSH connection; the guest runs under TCG)."""

import subprocess
from pathlib import Path

import pytest

from tests.lab.layout import Layout
from tests.vm import play

REPO = Path(__file__).resolve().parents[2]
LAYOUT = Layout("xk", 101)
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
PINGS = 5
SSH_PASS = {"name": "ssh", "action": "pass", "source": LAYOUT.bridge_address + "/32", "protocol": "tcp", "port": 22}
ICMP = {"name": "icmp", "action": "drop", "protocol": "icmp"}
NET = {"action": "drop", "source": "198.19.0.0/16"}
WEB = {"action": "pass", "protocol": "tcp", "port": "80-443"}
SSH_BY_NAME = {"name": "ssh", "action": "pass", "protocol": "tcp", "port": 22}
CHAINED = REPO / "tests" / "integration" / "data" / "xt_ports.bpf.c"
CHAINED_PIN_DIR = "/sys/fs/bpf/xdpfleet/eth0/next"


def _task(register, module, **args):
    return {"name": register, "register": register, f"xdpfleet.xdp.{module}": args}


def _twice(register, module, **args):
    return [_task(f"{register}_{run}", module, **args) for run in (1, 2)]


def _variant_source(directory: Path) -> Path:
    """The firewall with one more global: a different object with the same map layout."""
    source = directory / "xdp_firewall_variant.bpf.c"
    source.write_text((REPO / "bpf" / "xdp_firewall.bpf.c").read_text()
                      + "\nconst volatile __u32 xdpfleet_test_variant = 2;\n")
    return source


def _tasks(variant: Path) -> list[dict]:
    ping = {"name": "ping", "register": "ping", "delegate_to": "localhost", "changed_when": False,
            "failed_when": False, "ansible.builtin.command": {"argv": [
                "ip", "netns", "exec", LAYOUT.client_name, "ping", "-n", "-q", "-c", str(PINGS), "-i", "0.2",
                "-W", "1", "{{ ansible_host }}"]}}
    kernel = {"name": "kernel", "register": "kernel", "changed_when": False,
              "ansible.builtin.command": {"argv": ["uname", "-r"]}}
    return ([kernel] + _twice("attach", "xdp_program", interface="eth0", object=str(FIREWALL))
            + _twice("overridden", "xdp_rules", interface="eth0", state="overridden", config=[SSH_PASS, ICMP, NET])
            + _twice("merged", "xdp_rules", interface="eth0", state="merged", config=[WEB])
            + _twice("replaced", "xdp_rules", interface="eth0", state="replaced", config=[SSH_BY_NAME])
            + _twice("deleted", "xdp_rules", interface="eth0", state="deleted", config=[{"source": "198.19.0.0/16"}])
            + [_task("upgrade", "xdp_program", interface="eth0", src=str(variant), cflags=["-I", str(REPO / "bpf")]),
               _task("gathered", "xdp_rules", interface="eth0", state="gathered"),
               _task("facts_before", "xdp_facts", interfaces=["eth0"], top_rules=10),
               ping,
               _task("facts_after", "xdp_facts", interfaces=["eth0"], top_rules=10)]
            + _twice("chained", "xdp_program", interface="eth0", hook="chained", src=str(CHAINED))
            + [_task("chained_facts", "xdp_facts", interfaces=["eth0"]),
               _task("chained_seen", "xdp_map", interface="eth0", pin_dir=CHAINED_PIN_DIR, map="xt_seen",
                     state="gathered"),
               _task("unchained", "xdp_program", interface="eth0", hook="chained", state="detached")])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Boot one guest, run every task once against it, return the registered results by name."""
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    directory = tmp_path_factory.mktemp("vm")
    with play.one_guest(LAYOUT):
        yield play.results_of(LAYOUT, _tasks(_variant_source(directory)), directory, "kernel")


def test_the_guest_runs_debian_12s_kernel(results):
    assert results["kernel"]["stdout"].startswith("6.1.")


def test_program_loads_then_upgrades_in_place(results):
    first, again, upgrade = results["attach_1"], results["attach_2"], results["upgrade"]
    assert first["changed"] and first["owner"] == "xdpfleet" and first["mode"] in ("native", "skb")
    assert not again["changed"] and again["prog_id"] == first["prog_id"]
    assert upgrade["changed"] and upgrade["prog_id"] != first["prog_id"] and upgrade["mode"] == first["mode"]
    assert upgrade["object_sha256"] != first["object_sha256"]
    # The maps were carried over, not recreated: the same map ids serve the new program.
    assert {item["name"]: item["id"] for item in upgrade["maps"]} == {item["name"]: item["id"] for item in first["maps"]}


def test_rule_states_apply_once_and_survive_the_upgrade(results):
    for state in ("overridden", "merged", "replaced", "deleted"):
        assert results[f"{state}_1"]["changed"] and not results[f"{state}_2"]["changed"], state
    assert results["overridden_1"]["after"] == [SSH_PASS, ICMP, NET]
    assert results["merged_1"]["after"] == [SSH_PASS, ICMP, NET, WEB]
    assert results["replaced_1"]["after"] == [SSH_BY_NAME, ICMP, NET, WEB]
    assert results["deleted_1"]["after"] == [SSH_BY_NAME, ICMP, WEB]
    assert results["gathered"]["gathered"] == [SSH_BY_NAME, ICMP, WEB]


def test_facts_count_the_dropped_pings(results):
    before = results["facts_before"]["ansible_facts"]["xdp"]["interfaces"]["eth0"]
    after = results["facts_after"]["ansible_facts"]["xdp"]["interfaces"]["eth0"]
    assert " 0 received" in results["ping"]["stdout"]
    hits = {rule["name"]: rule["packets"] for rule in after["top_rules"]}
    hits_before = {rule["name"]: rule["packets"] for rule in before["top_rules"]}
    assert hits["icmp"] - hits_before.get("icmp", 0) == PINGS
    assert after["stats"]["drop"]["packets"] - before["stats"]["drop"]["packets"] == PINGS
    assert after["prog_id"] == results["upgrade"]["prog_id"]


def test_a_chained_program_runs_behind_the_firewall(results):
    """hook: chained on 6.1: the tail call reaches the program in the slot, which counts the packets the firewall
    passed (this run's SSH traffic); the firewall still counts and drops as before."""
    first, again = results["chained_1"], results["chained_2"]
    assert first["changed"] and not again["changed"] and again["prog_id"] == first["prog_id"]
    facts = results["chained_facts"]["ansible_facts"]["xdp"]["interfaces"]["eth0"]
    assert [(item["place"], item["prog_id"]) for item in facts["hook"]["programs"]] == [
        ("root", results["upgrade"]["prog_id"]), ("chained", first["prog_id"])]
    assert facts["counted_by"]["place"] == "root"
    seen = sum(entry["value"] for entry in results["chained_seen"]["gathered"])
    assert seen > 0, results["chained_seen"]
    assert results["unchained"]["changed"] and results["unchained"]["pins_removed"]
