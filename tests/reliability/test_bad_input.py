"""Bad input, module by module and through the roles: each is refused with a message naming the field,
and the host's kernel state (programs, maps, entries), pins and desired-state files are as before."""

import json

import pytest
import yaml

from tests.helpers import kernel
from tests.helpers.hosts import ModuleRunner, playbook
from tests.lab import Lab
from tests.reliability.common import LAYOUT, SSH_PASS

IF = {"interface": "eth0"}
OBJECT = "/var/lib/xdpfleet/xdp_firewall.o"


def rules(*config, **extra):
    return ("xdp_rules", dict(IF, config=list(config), state="overridden", **extra))


def xmap(name, entries=None, **extra):
    args = dict(IF, map=name, **extra)
    if entries is not None:
        args["entries"] = entries
    return ("xdp_map", args)


def program(**extra):
    return ("xdp_program", dict(dict(IF, object=OBJECT, remote_src=True), **extra))


TOO_MANY = [{"action": "drop", "source": "198.19.%d.%d/32" % (i // 256 % 256, i % 256), "protocol": "udp",
             "port": 1 + i // 65536} for i in range(131073)]

# (case id, (module, arguments), words the message must contain: the field first)
MODULE_CASES = [
    ("rules-cidr-octet", rules({"action": "drop", "source": "198.18.0.300/24"}), ["config[0].source"]),
    ("rules-cidr-text", rules({"action": "drop", "destination": "not-a-network"}), ["config[0].destination"]),
    ("rules-cidr-prefix", rules({"action": "drop", "source": "198.18.0.0/33"}), ["config[0].source"]),
    ("rules-cidr-host-bits", rules({"action": "drop", "source": "198.18.0.1/15"}), ["config[0].source"]),
    ("rules-port-high", rules({"action": "drop", "protocol": "udp", "port": 70000}), ["config[0].port", "70000"]),
    ("rules-port-zero", rules({"action": "drop", "protocol": "tcp", "port": 0}), ["config[0].port"]),
    ("rules-port-range", rules({"action": "drop", "protocol": "tcp", "port": "443-80"}), ["config[0].port"]),
    ("rules-port-text", rules({"action": "drop", "protocol": "tcp", "port": "http"}), ["config[0].port"]),
    ("rules-port-no-l4", rules({"action": "drop", "protocol": "icmp", "port": 80}), ["config[0].port"]),
    ("rules-protocol", rules({"action": "drop", "protocol": "sctpx"}), ["config[0].protocol", "sctpx"]),
    ("rules-protocol-number", rules({"action": "drop", "protocol": 300}), ["config[0].protocol"]),
    ("rules-action", rules({"action": "reject", "protocol": "udp"}), ["config[0].action", "reject"]),
    ("rules-no-action", rules({"protocol": "udp"}), ["config[0].action"]),
    ("rules-unknown-key", rules({"action": "drop", "sauce": "198.18.0.0/24"}), ["config[0]", "sauce"]),
    ("rules-family-mix", rules({"action": "drop", "source": "198.18.0.0/24", "destination": "2001:db8::/32"}),
     ["config[0]"]),
    ("rules-second-rule", rules(SSH_PASS, {"action": "drop", "source": "198.18.0.0/16", "port": "x"}),
     ["config[1].port"]),
    ("rules-duplicate-name", rules(dict(SSH_PASS), dict(SSH_PASS, port=23)), ["ssh"]),
    ("rules-not-a-dict", ("xdp_rules", dict(IF, config=["drop all"])), ["config"]),
    ("rules-state", ("xdp_rules", dict(IF, state="merge", config=[])), ["state", "merge"]),
    ("rules-default-action", ("xdp_rules", dict(IF, default_action="deny")), ["default_action", "deny"]),
    ("rules-sampling-negative", ("xdp_rules", dict(IF, sampling=-5)), ["sampling"]),
    ("rules-sampling-type", ("xdp_rules", dict(IF, sampling="often")), ["sampling"]),
    ("rules-set-undefined", rules(SSH_PASS, {"action": "drop", "source_set": "blocklist"}),
     ["rule 2.source_set", "blocklist"]),
    ("rules-set-host-bits", ("xdp_rules", dict(IF, config=[SSH_PASS, {"action": "drop", "source_set": "bl"}],
                                               sets={"bl": ["198.19.0.0/16", "198.18.0.5/24"]})),
     ["sets.bl[1]", "198.18.0.0/24"]),
    ("rules-set-name", ("xdp_rules", dict(IF, config=[SSH_PASS], sets={"bad name": ["198.19.0.0/16"]})),
     ["sets", "bad name"]),
    ("rules-set-and-source", rules({"action": "drop", "source": "198.19.0.0/16", "source_set": "bl"}),
     ["config[0]", "source_set"]),
    ("rules-tcp-flags-no-tcp", rules({"action": "drop", "protocol": "udp", "tcp_flags": "syn"}),
     ["config[0].tcp_flags", "protocol: tcp"]),
    ("rules-tcp-flags-name", rules({"action": "drop", "protocol": "tcp", "tcp_flags": "syn,push"}),
     ["config[0].tcp_flags", "push"]),
    ("rules-tcp-flags-set-and-clear", rules({"action": "drop", "protocol": "tcp", "tcp_flags": "syn,!syn"}),
     ["config[0].tcp_flags", "both set and clear"]),
    ("rules-icmp-type", rules({"action": "drop", "protocol": "icmp", "icmp_type": 300}),
     ["config[0].icmp_type", "300", "0-255"]),
    ("rules-icmp-code-alone", rules({"action": "drop", "protocol": "icmp", "icmp_code": 1}),
     ["config[0].icmp_code", "icmp_type"]),
    ("rules-icmp-no-icmp", rules({"action": "drop", "protocol": "tcp", "icmp_type": 8}),
     ["config[0].icmp_type", "icmp or icmpv6"]),
    ("rules-icmpv6-nd", rules({"action": "drop", "protocol": "icmpv6", "icmp_type": 135}),
     ["config[0].icmp_type", "neighbour discovery"]),
    ("rules-source-port", rules({"action": "drop", "protocol": "udp", "source_port": "53-1"}),
     ["config[0].source_port"]),
    ("rules-source-port-no-l4", rules({"action": "drop", "protocol": "icmp", "source_port": 53}),
     ["config[0].source_port", "tcp or udp"]),
    ("rules-length", rules({"action": "drop", "length": 70000}), ["config[0].length", "70000"]),
    ("rules-ttl", rules({"action": "drop", "ttl": "1-300"}), ["config[0].ttl", "0-255"]),
    ("rules-pps-zero", rules({"action": "rate_limit", "pps": 0}), ["config[0].pps", "0"]),
    ("rules-bps-low", rules({"action": "rate_limit", "bps": 1}), ["config[0].bps"]),
    ("rules-rate-missing", rules({"action": "rate_limit", "protocol": "udp"}), ["config[0]", "pps", "bps"]),
    ("rules-burst-zero", rules({"action": "rate_limit", "pps": 100, "burst": 0}), ["config[0].burst", "one packet"]),
    ("rules-burst-bytes-low", rules({"action": "rate_limit", "bps": 10 ** 6, "burst_bytes": 100}),
     ["config[0].burst_bytes", "1514"]),
    ("rules-rate-on-drop", rules({"action": "drop", "pps": 100}), ["config[0].pps", "rate_limit"]),
    ("rules-per-prefix-per-rule", rules({"action": "rate_limit", "pps": 100, "per": "rule", "per_prefix": 24}),
     ["config[0].per_prefix", "per: source"]),
    ("rules-per-prefix-range", rules({"action": "rate_limit", "pps": 100, "per_prefix": 33}),
     ["config[0].per_prefix", "1-32"]),
    ("rules-expires-at-text", rules({"action": "drop", "expires_at": "next tuesday"}),
     ["config[0].expires_at", "RFC 3339"]),
    ("rules-expires-at-past", rules({"action": "drop", "expires_at": "2020-01-01T00:00:00Z"}),
     ["config[0].expires_at", "in the past"]),
    ("rules-expires-both", rules({"action": "drop", "expires_at": "2100-01-01T00:00:00Z", "expires_after": 60}),
     ["config[0]", "expires_at and expires_after"]),
    ("rules-expires-after-zero", rules({"action": "drop", "expires_after": 0}), ["config[0].expires_after"]),
    ("rules-interface", ("xdp_rules", dict(interface="nosuch0", config=[])), ["nosuch0"]),
    ("rules-no-interface", ("xdp_rules", dict(config=[])), ["interface"]),
    ("rules-pin-dir", ("xdp_rules", dict(IF, pin_dir="/tmp/xdpfleet-nowhere", config=[])), ["/tmp/xdpfleet-nowhere"]),
    ("rules-over-capacity", rules(*TOO_MANY), ["131073", "131072"]),
    ("map-missing", xmap("xf_nosuch", [{"key": 0, "value": 1}]), ["xf_nosuch"]),
    ("map-key-size", xmap("xf_gen_0", [{"key": "00112233445566", "value": 1}], key_type="hex"), ["key"]),
    ("map-key-range", xmap("xf_gen_0", [{"key": 1 << 40, "value": 1}]), ["key"]),
    ("map-value-type", xmap("xf_gen_0", [{"key": 1, "value": "lots"}]), ["value"]),
    ("map-value-field", xmap("xf_config", [{"key": 0, "value": {"no_such_field": 1}}]), ["no_such_field"]),
    ("map-no-key", xmap("xf_gen_0", [{"value": 1}]), ["key"]),
    ("map-key-type", xmap("xf_gen_0", [{"key": 1, "value": 1}], key_type="u128"), ["key_type", "u128"]),
    ("map-ipv4-key", xmap("xf_s4h_0", [{"key": "198.18.0.300", "value": 1}], key_type="ipv4"), ["198.18.0.300"]),
    ("map-hex-odd", xmap("xf_gen_0", [{"key": 1, "value": "abc"}], value_type="hex"), ["value"]),
    ("map-state", xmap("xf_gen_0", [], state="replace"), ["state", "replace"]),
    ("map-no-place", ("xdp_map", dict(map="xf_gen_0", entries=[])), ["interface", "pin_dir"]),
    ("map-interface", ("xdp_map", dict(interface="nosuch0", map="xf_gen_0", entries=[])), ["nosuch0"]),
    ("program-interface", program(interface="nosuch0"), ["nosuch0"]),
    ("program-mode", program(mode="turbo"), ["mode", "turbo"]),
    ("program-object", program(object="/var/lib/xdpfleet/nosuch.o"), ["/var/lib/xdpfleet/nosuch.o"]),
    ("program-sha256", program(object_sha256="00" * 32), ["object_sha256"]),
    ("program-name", program(program="nosuch_prog"), ["nosuch_prog"]),
    ("program-src-and-object", program(src="/tmp/x.c"), ["src", "object"]),
    ("program-pin-dir", program(pin_dir="/tmp/xdpfleet-pins"), ["pin_dir", "/tmp/xdpfleet-pins"]),
    ("program-migration", program(map_migration="drop"), ["map_migration", "drop"]),
    ("program-nothing", ("xdp_program", dict(IF)), ["src", "object"]),
    ("facts-interface", ("xdp_facts", dict(interfaces=["nosuch0"])), ["nosuch0"]),
    ("facts-per-cpu", ("xdp_facts", dict(per_cpu="maybe")), ["per_cpu"]),
    ("facts-top-rules", ("xdp_facts", dict(top_rules=-1)), ["top_rules"]),
    ("drops-interface", ("xdp_drops", dict(interface="nosuch0")), ["nosuch0"]),
    ("drops-timeout", ("xdp_drops", dict(IF, timeout=-1)), ["timeout"]),
    ("drops-count", ("xdp_drops", dict(IF, count=-3)), ["count"]),
]

# A lockout: the SSH session of the run would be dropped (SSH_CONNECTION as sshd sets it).
SSH_SESSION = {"SSH_CONNECTION": "198.18.120.1 40000 198.18.120.11 22"}
LOCKOUT_CASES = [
    ("rules-lockout-default", rules({"action": "pass", "protocol": "icmp"}, default_action="drop"),
     ["default action drop"]),
    ("rules-lockout-rule", rules({"name": "no-tcp", "action": "drop", "protocol": "tcp"}), ["rule 1", "no-tcp"]),
]


@pytest.fixture(scope="module")
def runner(deployed):
    host = deployed.hosts[0]
    runner = ModuleRunner(host)
    runner.host, runner.baseline = host, kernel.snapshot(host)
    assert runner.baseline["programs"]["eth0"]["name"] == "xdpfleet_fw"
    yield runner
    runner.close()


def assert_refused(runner, case, env=None):
    name, (module, args), words = case
    result = runner.run(module, args, env)
    assert result.get("failed"), (name, result)
    message = result["msg"]
    for word in words:
        assert word in message, "%s: %r does not name %r" % (name, message, word)
    assert kernel.snapshot(runner.host) == runner.baseline, name


@pytest.mark.parametrize("case", MODULE_CASES, ids=[case[0] for case in MODULE_CASES])
def test_module_refuses_and_changes_nothing(runner, case):
    assert_refused(runner, case)


@pytest.mark.parametrize("case", LOCKOUT_CASES, ids=[case[0] for case in LOCKOUT_CASES])
def test_lockout_refused_and_changes_nothing(runner, case):
    assert_refused(runner, case, SSH_SESSION)


# --- role variables: one playbook, each case an include_role in a block whose rescue keeps the message ------

# (case id, role, entry point, variables, words the message must contain)
ROLE_CASES = [
    ("firewall-rules-type", "firewall", "update", {"xdp_rules": "drop everything"}, ["xdp_rules"]),
    ("firewall-default-action", "firewall", "update", {"xdp_default_action": "reject"}, ["xdp_default_action"]),
    ("firewall-sampling", "firewall", "update", {"xdp_sampling": "often"}, ["xdp_sampling"]),
    ("firewall-health-checks", "firewall", "update", {"xdp_health_checks": {"tcp": 80}}, ["xdp_health_checks"]),
    ("firewall-health-timeout", "firewall", "update", {"xdp_health_timeout": "soon"}, ["xdp_health_timeout"]),
    ("firewall-mode", "firewall", "main", {"xdp_mode": "turbo"}, ["xdp_mode", "turbo"]),
    ("firewall-interfaces", "firewall", "main", {"xdp_interfaces": {"eth0": 1}}, ["xdp_interfaces"]),
    ("firewall-force", "firewall", "main", {"xdp_firewall_force": "perhaps"}, ["xdp_firewall_force"]),
    ("prereqs-backend", "prereqs", "main", {"xdp_backend": "ebpf"}, ["xdp_backend", "ebpf"]),
    ("stats-top-rules", "stats", "main", {"stats_top_rules": "ten"}, ["stats_top_rules"]),
    # last: it gets past the argument specs, so the update's own failure handling runs
    ("firewall-rule-port", "firewall", "update",
     {"xdp_rules": [{"action": "drop", "protocol": "udp", "port": 70000}]}, ["config[0].port", "70000"]),
]


REMEMBER_ERROR = "{{ role_errors | default({}) | combine({%r: ansible_failed_result.msg}) }}"


def role_case_block(case_id, role, entry_point, variables):
    include = {"name": "xdpfleet.xdp." + role, "tasks_from": entry_point}
    return {"name": case_id, "block": [{"ansible.builtin.include_role": include, "vars": variables}],
            "rescue": [{"ansible.builtin.set_fact": {"role_errors": REMEMBER_ERROR % case_id}}]}


@pytest.fixture(scope="module")
def role_errors(runner, tmp_path_factory):
    directory = tmp_path_factory.mktemp("roles")
    save = {"ansible.builtin.copy": {"dest": str(directory / "errors.json"), "content": "{{ role_errors | to_json }}"},
            "delegate_to": "localhost"}
    play = [{"hosts": runner.host.name, "gather_facts": False,
             "tasks": [role_case_block(*case[:4]) for case in ROLE_CASES] + [save]}]
    path = directory / "bad_roles.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    run = playbook(Lab.load(LAYOUT), path, directory, {})
    assert run.returncode == 0, run.stdout[-3000:]
    return json.loads((directory / "errors.json").read_text())


@pytest.mark.parametrize("case", ROLE_CASES, ids=[case[0] for case in ROLE_CASES])
def test_role_variable_refused(runner, role_errors, case):
    case_id, words = case[0], case[4]
    assert case_id in role_errors, "%s was not refused" % case_id
    for word in words:
        assert word in role_errors[case_id], "%s: %r does not name %r" % (case_id, role_errors[case_id], word)


def test_role_variables_changed_nothing(runner, role_errors):
    assert kernel.snapshot(runner.host) == runner.baseline
