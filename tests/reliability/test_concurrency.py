"""Two update_rules.yml runs against one host at once serialize on the host lock; the host ends with
exactly one of the two rule sets, never a mixture."""

import subprocess
import time

from tests.helpers import kernel
from tests.helpers.hosts import ModuleRunner, ansible_env, module_command, module_env, module_input, on_host, \
    playbook_command, write_variables
from tests.lab.layout import REPO
from tests.reliability.common import BASE_RULES, SSH_PASS

SIZE = 2000


def rule_set(label, port):
    return [SSH_PASS] + [{"name": "%s-%d" % (label, index), "action": "drop",
                          "source": "198.19.%d.%d/32" % (index >> 8, index & 255), "protocol": "udp",
                          "port": port} for index in range(SIZE)]


def gathered(runner):
    return runner.run("xdp_rules", {"interface": "eth0", "state": "gathered"})["gathered"]


def test_a_held_host_lock_holds_an_update_back(deployed):
    host = deployed.hosts[0]
    runner = ModuleRunner(host)
    holder = subprocess.Popen(["nsenter", "-t", str(host.pid), "--net", "--mount", "--", "flock",
                               "/run/xdpfleet/eth0.lock", "sh", "-c", "echo locked; sleep 6"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        before = kernel.snapshot(host)
        started = time.monotonic()
        update = subprocess.Popen(module_command(host, "xdp_rules"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  env=module_env(), text=True)
        update.stdin.write(module_input({"interface": "eth0", "state": "overridden", "config": rule_set("held", 7)},
                                        name="xdp_rules"))
        update.stdin.close()
        time.sleep(2)
        assert update.poll() is None, "the update ran while another run held the host lock"
        assert kernel.snapshot(host) == before
        holder.wait()
        update.stdout.read()  # the result is large: the module blocks until it is read
        assert update.wait(timeout=120) == 0
        assert time.monotonic() - started > 3
        assert gathered(runner) == rule_set("held", 7)
    finally:
        holder.kill()
        runner.run("xdp_rules", {"interface": "eth0", "state": "overridden", "config": BASE_RULES})
        runner.close()


def test_two_rollouts_at_once_end_with_exactly_one_set(deployed, tmp_path):
    host = deployed.hosts[0]
    sets = {"a": rule_set("a", 11), "b": rule_set("b", 12)}
    runs = [subprocess.Popen(playbook_command(deployed.inventory, REPO / "playbooks" / "update_rules.yml",
                                              write_variables(tmp_path, label, {"xdp_hosts": host.name,
                                                                                "xdp_rules": rules})),
                             cwd=REPO, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for label, rules in sets.items()]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    runner = ModuleRunner(host)
    try:
        assert [run.returncode for run in runs] == [0, 0], outputs
        final = gathered(runner)
        assert final in (sets["a"], sets["b"]), "a mixture: %s" % sorted({rule["name"][:2] for rule in final})
        state = on_host(host, """
            import json
            from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel, _fw_store
            with _fw_kernel.pinned_maps("/sys/fs/bpf/xdpfleet/eth0") as maps:
                kernel = _fw_kernel.KernelRuleset(maps)
                print(json.dumps([kernel.digest == _fw_store.read_state("eth0")["digest"], len(kernel)]))
        """)
        assert state.strip() == "[true, %d]" % (SIZE + 1)
    finally:
        runner.run("xdp_rules", {"interface": "eth0", "state": "overridden", "config": BASE_RULES})
        runner.close()
