"""bpf_program, bpf_events and the XDP health monitor on Debian 12's stock kernel (6.1) in a qemu guest booted by
tests/vm, which has what the lab's kernel lacks or refuses: kprobes and BPF trampolines (fentry). The write
monitor's three forms (tracepoint, kprobe, fentry) count the same writes of the process they watch; the monitor's
tp_btf programs load with 6.1's BTF and count aborts and closed-port drops. One playbook run (the guest runs
under TCG)."""

import subprocess
from pathlib import Path

import pytest

from tests.lab.layout import Layout
from tests.vm import play

REPO = Path(__file__).resolve().parents[2]
LAYOUT = Layout("tv", 170)
WRITES, ABORTED, DROPPED = 20, 10, 7
ABORT_PORT, CLOSED_PORT = 7777, 7778
ON_HOST = "/var/lib/xdpfleet"
FORMS = ["wm_tracepoint", "wm_kprobe", "wm_fentry"]


def _task(register, module, **args):
    return {"name": register, "register": register, module if "." in module else f"xdpfleet.xdp.{module}": args}


def _send(register, port, count):
    sender = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "[s.sendto(b'x' * 32, ('{{ ansible_host }}', %d)) for _ in range(%d)]" % (port, count))
    return {"name": register, "register": register, "delegate_to": "localhost", "changed_when": False,
            "ansible.builtin.command": {"argv": ["ip", "netns", "exec", LAYOUT.client_name, "python3", "-c", sender]}}


def _tasks(objects):
    return [
        {"name": "kernel", "register": "kernel", "changed_when": False, "ansible.builtin.command": {"argv": ["uname", "-r"]}},
        _task("directory", "ansible.builtin.file", path=ON_HOST, state="directory", mode="0755"),
        *[_task(f"copy_{name}", "ansible.builtin.copy", src=str(path), dest=f"{ON_HOST}/{path.name}", mode="0644")
          for name, path in objects.items()],
        *[_task(f"writes_{run}", "bpf_program", name="write_monitor", object=f"{ON_HOST}/write_monitor.o",
                programs=FORMS) for run in (1, 2)],
        {"name": "watch", "register": "watch", "changed_when": False, "ansible.builtin.command": {
            "argv": ["python3", f"{ON_HOST}/guest_watch_writes.py", str(WRITES)]}},
        _task("counts", "xdp_map", pin_dir="/sys/fs/bpf/xdpfleet/tracing/write_monitor", map="wm_counts",
              state="gathered"),
        _task("events", "bpf_events", name="write_monitor", map="wm_events", record_type="wm_event",
              count=WRITES, timeout=10),
        *[_task(f"monitor_{run}", "bpf_program", name="xdp_monitor", object=f"{ON_HOST}/xdp_monitor.o")
          for run in (1, 2)],
        _task("abort", "xdp_program", interface="eth0", object=f"{ON_HOST}/tr_abort.o", remote_src=True),
        _send("send_aborted", ABORT_PORT, ABORTED),
        _send("send_closed", CLOSED_PORT, DROPPED),
        {"name": "settle", "ansible.builtin.wait_for": {"timeout": 2}},
        _task("facts", "xdp_facts", interfaces=["eth0"]),
        _task("unabort", "xdp_program", interface="eth0", state="detached"),
        _task("writes_detached", "bpf_program", name="write_monitor", state="detached"),
        _task("monitor_detached", "bpf_program", name="xdp_monitor", state="detached"),
        {"name": "pins", "register": "pins", "changed_when": False, "ansible.builtin.command": {
            "argv": ["find", "/sys/fs/bpf/xdpfleet/tracing"]}, "failed_when": False},
    ]


def _compile(source, target):
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", str(source),
                    "-o", str(target)], check=True)
    return target


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Boot one guest, run every task once against it, return the registered results by name."""
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    directory = tmp_path_factory.mktemp("vm")
    objects = {"write_monitor": _compile(REPO / "playbooks" / "examples" / "files" / "write_monitor.bpf.c",
                                         directory / "write_monitor.o"),
               "tr_abort": _compile(REPO / "tests" / "integration" / "data" / "tr_abort.bpf.c",
                                    directory / "tr_abort.o"),
               "xdp_monitor": REPO / "build" / "bpf" / "xdp_monitor.o",
               "watcher": REPO / "tests" / "vm" / "guest_watch_writes.py"}
    with play.one_guest(LAYOUT):
        yield play.results_of(LAYOUT, _tasks(objects), directory, "tracing")


def test_the_guest_runs_debian_12s_kernel(results):
    assert results["kernel"]["stdout"].startswith("6.1.")


def test_kprobe_fentry_and_tracepoint_forms_count_the_same_writes(results):
    first, again = results["writes_1"], results["writes_2"]
    assert first["changed"] and not again["changed"] and again["programs"] == first["programs"]
    assert {item["name"]: item["link_type"] for item in first["programs"]} == {
        "wm_tracepoint": "perf_event", "wm_kprobe": "perf_event", "wm_fentry": "tracing"}
    counts = dict((entry["key"], entry["value"]) for entry in results["counts"]["gathered"])
    assert counts == {0: WRITES, 1: WRITES, 2: WRITES}, counts


def test_the_events_are_those_of_the_watched_process_decoded(results):
    pid = int(results["watch"]["stdout"])
    events = results["events"]["events"]
    assert len(events) == WRITES and all(event["pid"] == pid and event["bytes"] == 1 for event in events), events
    assert set(event["comm"] for event in events) == {"python3"}


def test_the_monitor_loads_on_6_1_and_counts_aborts_and_closed_port_drops(results):
    assert results["monitor_1"]["changed"] and not results["monitor_2"]["changed"]
    monitor = results["facts"]["ansible_facts"]["xdp"]["interfaces"]["eth0"]["monitor"]
    assert monitor["exceptions"] == [{"prog_id": results["abort"]["prog_id"], "program": "tr_abort",
                                      "action": "ABORTED", "packets": ABORTED}]
    assert dict((item["reason"], item["packets"]) for item in monitor["drops"]).get("NO_SOCKET") == DROPPED, monitor


def test_detach_leaves_no_tracing_pins(results):
    for name in ("writes_detached", "monitor_detached"):
        assert results[name]["changed"] and results[name]["programs"] == []
    assert results["pins"]["stdout"] == ""
