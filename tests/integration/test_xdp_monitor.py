"""The XDP health monitor (bpf/xdp_monitor.bpf.c) on a lab host of its own (prefix tr, 198.18.160.0/24): a
program that aborts on N packets makes it count exactly N exceptions of that program on that interface, and
UDP to a closed port counts the kernel's NO_SOCKET drops; xdp_facts shows them."""

import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.hosts import on_host, playbook, recap, run_module
from tests.lab import Lab, Layout

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
LAYOUT = Layout("tr", 160)
MONITOR = REPO / "build" / "bpf" / "xdp_monitor.o"
ABORT_PORT, CLOSED_PORT = 7777, 7778
ABORTED, DROPPED = 25, 9
COUNT_WAIT = 10  # seconds for the packets sent to be counted


@pytest.fixture(scope="module")
def fleet():
    with Lab.running(1, LAYOUT) as lab:
        yield lab


@pytest.fixture
def host(fleet, tmp_path):
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    abort = tmp_path / "tr_abort.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    str(DATA / "tr_abort.bpf.c"), "-o", str(abort)], check=True)
    host = fleet.hosts[0]
    _clean(host)
    assert succeeded(run_module(host, "bpf_program", {"name": "xdp_monitor", "object": str(MONITOR)}))["changed"]
    assert succeeded(run_module(host, "xdp_program", {"interface": "eth0", "object": str(abort),
                                                      "remote_src": True}))["changed"]
    yield host
    _clean(host)


def _clean(host):
    host.run("ip link set dev eth0 xdp off; rm -rf /sys/fs/bpf/xdpfleet")


def succeeded(result):
    assert not result.get("failed"), result
    return result


def send_udp(fleet, host, port, count):
    sender = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "[s.sendto(b'x' * 32, (%r, %d)) for _ in range(%d)]" % (host.address, port, count))
    assert fleet.client.run("python3 -c %s" % shlex.quote(sender)).rc == 0


def monitor_counts(host):
    return json.loads(on_host(host, """
        import json
        from ansible_collections.xdpfleet.xdp.plugins.module_utils import _monitor
        print(json.dumps(_monitor.of_interface(_monitor.counts(), "eth0")))
    """))


def counted(host, kind, expected):
    """The interface's counters of one kind once they add up to at least expected packets (or the wait is
    over)."""
    deadline = time.monotonic() + COUNT_WAIT
    while True:
        found = monitor_counts(host)[kind]
        if sum(item["packets"] for item in found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_aborts_and_closed_port_drops_are_counted_exactly(fleet, host):
    prog_id = run_module(host, "xdp_facts", {"interfaces": ["eth0"]})["ansible_facts"]["xdp"]["interfaces"]["eth0"][
        "prog_id"]
    before = monitor_counts(host)  # the host's own traffic may have had a packet dropped already
    assert before["exceptions"] == [] and before["redirect_errors"] == []
    no_socket = dict((item["reason"], item["packets"]) for item in before["drops"]).get("NO_SOCKET", 0)

    send_udp(fleet, host, ABORT_PORT, ABORTED)
    assert counted(host, "exceptions", ABORTED) == [
        {"prog_id": prog_id, "program": "tr_abort", "action": "ABORTED", "packets": ABORTED}]

    send_udp(fleet, host, CLOSED_PORT, DROPPED)
    drops = dict((item["reason"], item["packets"]) for item in counted(host, "drops", DROPPED + no_socket))
    assert drops.get("NO_SOCKET") == DROPPED + no_socket, drops

    facts = run_module(host, "xdp_facts", {"interfaces": ["eth0"]})["ansible_facts"]["xdp"]["interfaces"]["eth0"]
    assert facts["monitor"]["exceptions"][0]["packets"] == ABORTED
    assert facts["monitor"]["drops"] == counted(host, "drops", DROPPED)
    time.sleep(1)
    assert monitor_counts(host)["exceptions"][0]["packets"] == ABORTED, "more exceptions than packets aborted"


def test_the_firewall_role_runs_the_monitor_and_the_report_shows_it(fleet, tmp_path):
    """deploy_xdp.yml with xdp_monitor: true attaches the monitor beside the firewall, a second run changes
    nothing; the stats report counts the NO_SOCKET drops of datagrams to a closed port; xdp_monitor: false
    detaches it, and remove_xdp.yml leaves none of it."""
    host = fleet.hosts[0]
    _clean(host)
    rules = [{"name": "ssh", "action": "pass", "protocol": "tcp", "port": 22}]
    deployed = playbook(fleet, "deploy_xdp.yml", tmp_path, {"xdp_rules": rules, "xdp_monitor": True})
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-2000:]
    again = playbook(fleet, "deploy_xdp.yml", tmp_path, {"xdp_rules": rules, "xdp_monitor": True})
    assert recap(again.stdout)[host.name]["changed"] == 0, again.stdout[-3000:]
    assert host.run("ls /sys/fs/bpf/xdpfleet/tracing/xdp_monitor/links").out.split() == [
        "xm_exception", "xm_kfree_skb", "xm_redirect_err"]

    send_udp(fleet, host, CLOSED_PORT, DROPPED)
    assert dict((item["reason"], item["packets"]) for item in counted(host, "drops", DROPPED))["NO_SOCKET"] == DROPPED
    stats = playbook(fleet, "gather_stats.yml", tmp_path, {"stats_report_dir": str(tmp_path / "report")})
    assert stats.returncode == 0, stats.stdout[-3000:]
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["rows"]
    eth0 = [row for row in rows if row["host"] == host.name and row["interface"] == "eth0"][0]
    assert {"reason": "NO_SOCKET", "packets": DROPPED} in eth0["monitor"]["drops"]
    line = [line for line in stats.stdout.splitlines() if host.name in line and " eth0 " in line][0]
    kernel_drops = int(re.search(r"\s0/0/(\d+)\W*$", line).group(1))  # exceptions/redirect errors/kernel drops
    assert kernel_drops == sum(item["packets"] for item in eth0["monitor"]["drops"]) >= DROPPED, line

    stopped = playbook(fleet, "deploy_xdp.yml", tmp_path, {"xdp_rules": rules, "xdp_monitor": False})
    assert stopped.returncode == 0, stopped.stdout[-3000:]
    assert host.run("ls /sys/fs/bpf/xdpfleet/tracing 2>&1").rc != 0
    removed = playbook(fleet, "remove_xdp.yml", tmp_path, {})
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert host.run("ls /sys/fs/bpf/xdpfleet /var/lib/xdpfleet/xdp_monitor.o 2>/dev/null").out == ""


def test_a_rolling_update_fails_its_batch_on_xdp_exceptions(fleet, tmp_path):
    """update_rules.yml with xdp_health_max_exceptions: 0 while a program behind the firewall aborts on a stream
    of datagrams: the batch fails on the monitor's count and gets its previous rules back."""
    host = fleet.hosts[0]
    _clean(host)
    before = [{"name": "ssh", "action": "pass", "protocol": "tcp", "port": 22}]
    deployed = playbook(fleet, "deploy_xdp.yml", tmp_path,
                        {"xdp_rules": before, "xdp_monitor": True, "xdp_firewall_next_slot": True})
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-2000:]
    abort = tmp_path / "tr_abort.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    str(DATA / "tr_abort.bpf.c"), "-o", str(abort)], check=True)
    assert succeeded(run_module(host, "xdp_program", {"interface": "eth0", "hook": "chained", "object": str(abort),
                                                      "remote_src": True}))["changed"]
    sender = ("import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "while True:\n    s.sendto(b'x', (%r, %d)); time.sleep(0.05)\n" % (host.address, ABORT_PORT))
    stream = subprocess.Popen(["ip", "netns", "exec", LAYOUT.client_name, "python3", "-c", sender])
    try:
        run = playbook(fleet, "update_rules.yml", tmp_path, {
            "xdp_rules": before + [{"name": "web", "action": "pass", "protocol": "tcp", "port": 80}],
            "xdp_health_max_exceptions": 0, "xdp_health_window": 2, "xdp_firewall_next_slot": True})
    finally:
        stream.kill()
        stream.wait()
    assert run.returncode != 0
    assert re.search(r"XDP exceptions ceiling 0 over 2 s failed:\s+\d+ XDP exceptions \(aborted packets\) counted, "
                     r"above the ceiling of 0", run.stdout), run.stdout[-3000:]
    gathered = run_module(host, "xdp_rules", {"interface": "eth0", "state": "gathered"})
    assert gathered["gathered"] == before
    _clean(host)
    removed = playbook(fleet, "remove_xdp.yml", tmp_path, {})
    assert removed.returncode == 0, removed.stdout[-3000:]
