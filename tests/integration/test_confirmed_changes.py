"""Confirmed changes (xdp_rules confirm_within) on a lab host with the firewall attached to eth0: a change that is
not confirmed reverts by itself, as packets from the client and the kernel's rule set show, with no packet of a flow
both sets pass lost; a confirmed one stays; a confirmation after the revert fails saying why; a reboot-equivalent
(the restore entry point, its timer gone) before the confirmation restores the previous set; and over real SSH the
revert outlives the session that armed it.

The suite runs on a lab of its own (prefix cf, 198.18.130.0/24): the controller is 198.18.130.1, the client
198.18.130.2, the host 198.18.130.11. Modules run in the host's namespaces through nsenter, except over SSH.
"""

import hashlib
import json
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import reverters
from tests.helpers.hosts import HOST_PYTHON, PYTHON, ad_hoc, ansible_env, on_host, run_module
from tests.helpers.traffic import Stream
from tests.lab import Lab, Layout
from tests.lab.layout import REPO

LAYOUT = Layout("cf", 130)
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
CLIENT = LAYOUT.client_address
SSH_PASS = {"name": "ssh", "action": "pass", "source": LAYOUT.bridge_address + "/32", "protocol": "tcp", "port": 22}
KEPT, CUT = 5001, 5002  # UDP ports of the client's stream: the change drops CUT only
BASE = [SSH_PASS, {"name": "kept", "action": "pass", "source": CLIENT + "/32", "protocol": "udp", "port": KEPT}]
CHANGE = BASE + [{"name": "no-ping", "action": "drop", "protocol": "icmp"},
                 {"name": "cut", "action": "drop", "source": CLIENT + "/32", "protocol": "udp", "port": CUT}]
RECORD = "/etc/xdpfleet/eth0.confirm.json"
# Without a shared control connection, so that the SSH session that armed a revert is gone when ansible returns.
OWN_CONNECTION = "-o ControlMaster=no -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"

# Prints when the kernel holds the rule set with this digest again (polled through the pins), or nothing by then.
WAIT_FOR_RULESET = """
import sys, time
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel
digest, until = sys.argv[1], float(sys.argv[2])
with _fw_kernel.pinned_maps("/sys/fs/bpf/xdpfleet/eth0") as maps:
    while time.time() < until:
        if _fw_kernel.KernelRuleset(maps).digest == digest:
            print(repr(time.time()))
            break
        time.sleep(0.001)
"""


@pytest.fixture(scope="module")
def fleet():
    with Lab.running(1, LAYOUT) as lab:
        yield lab


@pytest.fixture(scope="module")
def attached(fleet):
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    host = fleet.hosts[0]
    host.run("rm -f /etc/xdpfleet/eth0.*")
    return succeeded(run_module(host, "xdp_program", {"interface": "eth0", "object": str(FIREWALL)}))


@pytest.fixture
def host(fleet, attached):
    """The host with BASE applied and nothing armed; the timer processes a test leaves are ended, and fail it."""
    host = fleet.hosts[0]
    host.run("rm -f %s /etc/xdpfleet/eth0.revert.json /var/lib/xdpfleet/eth0.revert.zip" % RECORD)
    succeeded(rules(host, state="overridden", config=BASE, default_action="pass"))
    yield host
    left = reverters.of_host(host)
    reverters.end(left)
    assert not left, "timer processes left running: %s" % left


def succeeded(result):
    assert not result.get("failed"), result
    return result


def rules(host, **args):
    return run_module(host, "xdp_rules", dict(dict(interface="eth0"), **args))


def pings(fleet, host):
    return fleet.client.run("ping -c 1 -W 1 %s" % host.address).rc == 0


def kernel_digest(host):
    return on_host(host, """
        from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel
        with _fw_kernel.pinned_maps("/sys/fs/bpf/xdpfleet/eth0") as maps:
            print(_fw_kernel.KernelRuleset(maps).digest)
    """).strip()


def waiting_for_ruleset(host, digest, until):
    """A process in the host's namespaces that prints the time at which the kernel holds this rule set again."""
    script = "import sys; sys.path.insert(0, %r)\n" % str(REPO / ".collections") + WAIT_FOR_RULESET
    return subprocess.Popen(["nsenter", "-t", str(host.pid), "--net", "--mount", "--", PYTHON, "-c", script, digest,
                             repr(until)], stdout=subprocess.PIPE, text=True)


def armed_record(host):
    return json.loads(host.run("cat %s" % RECORD).out)


def timer_gone(host, timeout=5.0):
    return reverters.ended(lambda: reverters.of_host(host), timeout)


def test_an_unconfirmed_change_reverts_by_itself_within_the_deadline_and_a_flow_both_sets_pass_loses_nothing(
        fleet, host, tmp_path):
    old = kernel_digest(host)
    assert pings(fleet, host)
    stream = Stream(fleet, host, [KEPT, CUT], tmp_path / "stop")
    try:
        armed = succeeded(rules(host, state="overridden", config=CHANGE, confirm_within=2))["revert"]
        token = armed_record(host)["token"]
        waiting = waiting_for_ruleset(host, old, armed["deadline"] + 2)
        assert armed["armed"] and armed["timer_running"] and armed["timer"].startswith("process ")
        assert not pings(fleet, host), "the change was not in force"
        reverted_at = float(waiting.communicate(timeout=30)[0] or "inf")
        assert pings(fleet, host), "ICMP still dropped after the revert"
    finally:
        sent, (kept, cut) = stream.stop()
    print("time to revert: %.3f s after the deadline; the flow both sets pass: %d of %d received; the flow the "
          "change cut: %d of %d" % (reverted_at - armed["deadline"], kept, sent, cut, sent))
    assert armed["deadline"] <= reverted_at <= armed["deadline"] + 2, "not reverted within the deadline + 2 s"
    assert kept == sent > 100, "packets of a flow both sets pass were lost (sent %d, received %d)" % (sent, kept)
    assert 0 < cut < sent, "the cut flow was not cut, or did not come back (sent %d, received %d)" % (sent, cut)

    gathered = succeeded(rules(host, state="gathered"))
    assert gathered["gathered"] == BASE and gathered["revert"]["reverted"]["by"] == "timer"
    assert not gathered["revert"]["armed"] and timer_gone(host), "the timer process did not end after firing"
    assert host.run("ls /etc/xdpfleet/eth0.revert.json").rc != 0
    refused = rules(host, state="confirmed")
    assert refused["failed"] and "because it was not confirmed within 2 s" in refused["msg"]
    fired_again = json.loads(on_host(host, """
        import json
        from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_confirm, _fw_run
        print(json.dumps(_fw_run.run(_fw_confirm.fire_request("eth0", "/sys/fs/bpf/xdpfleet/eth0", %r, "timer"))))
    """ % token))
    assert not fired_again["changed"] and kernel_digest(host) == old


def test_a_confirmed_change_stays_after_its_deadline_and_facts_showed_the_armed_revert(fleet, host):
    armed = succeeded(rules(host, state="overridden", config=CHANGE, confirm_within=2))["revert"]
    facts = succeeded(run_module(host, "xdp_facts", {"interfaces": ["eth0"], "xdp_modes": False}))
    shown = facts["ansible_facts"]["xdp"]["interfaces"]["eth0"]["revert"]
    assert shown["armed"] and shown["deadline"] == armed["deadline"] and 0 < shown["seconds_left"] <= 2
    confirmed = succeeded(rules(host, state="confirmed"))
    assert confirmed["changed"] and confirmed["revert"]["confirmed"] and not confirmed["revert"]["armed"]
    assert timer_gone(host, 1), "the confirmation did not end the timer process"
    time.sleep(max(0.0, armed["deadline"] + 2 - time.time()))
    assert not pings(fleet, host), "the confirmed change was reverted"
    assert succeeded(rules(host, state="gathered"))["gathered"] == CHANGE
    assert not succeeded(rules(host, state="confirmed"))["changed"]


def test_over_ssh_the_revert_outlives_the_session_that_armed_it(fleet, host):
    """ansible's ssh connection returns only once every holder of the session's stdout and stderr has closed them;
    with no shared control connection, the session has ended when ansible returns. The module runs from Ansible's
    payload zip, which is deleted at its exit: the timer runs a copy."""
    env = ansible_env(ANSIBLE_SSH_ARGS=OWN_CONNECTION)
    started = time.time()
    armed = ad_hoc(LAYOUT.inventory, host.name, "xdpfleet.xdp.xdp_rules", dict(
        interface="eth0", state="overridden", config=CHANGE, confirm_within=6), env=env)
    returned = time.time()
    assert not armed["failed"], armed
    assert returned - started < 6, "ansible waited for the timer process"
    deadline = armed["revert"]["deadline"]
    timer = reverters.of_host(host)
    assert len(timer) == 1 and "/var/lib/xdpfleet/eth0.revert.zip" in open("/proc/%d/cmdline" % timer[0]).read()
    assert host.run("test -f /var/lib/xdpfleet/eth0.revert.zip").rc == 0
    time.sleep(max(0.0, deadline + 2 - time.time()))
    assert succeeded(rules(host, state="gathered"))["gathered"] == BASE, "not reverted within the deadline + 2 s"
    assert pings(fleet, host) and timer_gone(host)
    assert host.run("test -e /var/lib/xdpfleet/eth0.revert.zip").rc != 0


def ssh_answers(host):
    try:
        socket.create_connection((host.address, 22), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_a_change_that_drops_the_controllers_ssh_is_reverted_and_the_host_answers_again(fleet, host):
    """With allow_lockout, a change that drops SSH from the controller: the module's answer cannot come back over
    the connection it cut (ansible is given up on), the host does not answer, and at the deadline it answers again
    by itself with the old rules."""
    cutting = [{"name": "no-ssh", "action": "drop", "protocol": "tcp", "port": 22}] + BASE
    argv = [str(REPO / ".venv" / "bin" / "ansible"), "-i", str(LAYOUT.inventory), host.name, "-m",
            "xdpfleet.xdp.xdp_rules", "-a", json.dumps(dict(interface="eth0", state="overridden", config=cutting,
                                                            allow_lockout=True, confirm_within=8))]
    ansible = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                               env=ansible_env(ANSIBLE_SSH_ARGS=OWN_CONNECTION))
    try:
        while host.run("test -f %s" % RECORD).rc != 0:
            assert ansible.poll() is None, "ansible ended before the revert was armed"
            time.sleep(0.1)
        deadline = armed_record(host)["deadline"]
        time.sleep(0.5)
        assert not ssh_answers(host), "SSH got through the change that drops it"
        while not ssh_answers(host):
            assert time.time() < deadline + 2, "the host did not answer by the deadline + 2 s"
            time.sleep(0.1)
        answered = time.time()
    finally:
        ansible.kill()
        ansible.wait()
    assert answered >= deadline - 0.5, "SSH answered before the revert was due"
    gathered = succeeded(rules(host, state="gathered"))
    assert gathered["gathered"] == BASE and gathered["revert"]["reverted"]["by"] == "timer"
    assert timer_gone(host)


def test_a_reboot_before_the_confirmation_restores_the_previous_set(fleet, host, tmp_path, attached):
    """The restore entry point (the firewall role's zipapp, as xdpfleet-restore.service runs it at boot) on a host
    whose firewall is gone and whose timer died with it."""
    sys.path.insert(0, str(REPO / "roles" / "firewall" / "files"))
    try:
        import build
    finally:
        sys.path.pop(0)
    record = {"interface": "eth0", "object": str(FIREWALL), "object_sha256": hashlib.sha256(
        FIREWALL.read_bytes()).hexdigest(), "program": attached["program"], "mode": attached["mode"],
        "pin_dir": attached["pin_dir"]}
    put(host, "/var/lib/xdpfleet/xdpfleet-restore.pyz", build.zipapp_bytes(str(REPO)))
    put(host, "/etc/xdpfleet/programs/eth0.json", json.dumps(record).encode())
    try:
        succeeded(rules(host, state="overridden", config=CHANGE, confirm_within=60))
        armed_at = armed_record(host)["armed_at"]
        reverters.end(reverters.of_host(host))
        wipe = host.run("ip link set eth0 xdp off && umount /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf")
        assert wipe.rc == 0, wipe

        restored = host.run("%s /var/lib/xdpfleet/xdpfleet-restore.pyz" % HOST_PYTHON)
        assert restored.rc == 0, restored
        assert "2 rules, reverting the change armed at %s that was not confirmed" % time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(armed_at)) in restored.out, restored
    finally:
        host.run("rm -rf /var/lib/xdpfleet/xdpfleet-restore.pyz /etc/xdpfleet/programs")
    gathered = succeeded(rules(host, state="gathered"))
    assert gathered["gathered"] == BASE and gathered["revert"]["reverted"]["by"] == "boot"
    assert pings(fleet, host)
    refused = rules(host, confirm=True)
    assert refused["failed"] and "because the host restarted before it was confirmed" in refused["msg"]


def put(host, path, data):
    subprocess.run(["nsenter", "-t", str(host.pid), "--net", "--mount", "--", "sh", "-c",
                    'mkdir -p "$(dirname "$0")" && cat > "$0"', path], input=data, check=True)
