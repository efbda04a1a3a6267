"""xdpfleet.xdp.bpf_program and bpf_events on a lab host of their own (prefix tr, 198.18.160.0/24): the tracing
programs of an object attached through pinned links on this kernel (tracepoint and tp_btf forms), kept across
runs, upgraded with their maps carried over, detached leaving nothing; kprobe and fentry programs refused here
with the reason. The kprobe and fentry forms run on Debian 12's 6.1 kernel in tests/vm."""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.hosts import on_host, playbook, run_module
from tests.lab import Lab, Layout

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
LAYOUT = Layout("tr", 160)
PIN_DIR = "/sys/fs/bpf/xdpfleet/tracing/getppid"
GONE_WAIT = 10  # seconds: the kernel frees a program whose last link went away from a work queue


@pytest.fixture(scope="module")
def fleet():
    with Lab.running(1, LAYOUT) as lab:
        yield lab


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tracing")

    def build(source, name, *flags):
        target = directory / (name + ".o")
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", *flags,
                        "-c", str(DATA / source), "-o", str(target)], check=True)
        return str(target)

    return {"first": build("tr_getppid.bpf.c", "first", "-DGENERATION=1"),
            "second": build("tr_getppid.bpf.c", "second", "-DGENERATION=2"),
            "kprobe": build("tr_probes.bpf.c", "kprobe", "-DKPROBE"),
            "fentry": build("tr_probes.bpf.c", "fentry", "-DFENTRY")}


@pytest.fixture
def host(fleet):
    host = fleet.hosts[0]
    host.run("rm -rf /sys/fs/bpf/xdpfleet")
    yield host
    host.run("rm -rf /sys/fs/bpf/xdpfleet")


def program(host, check=False, **args):
    return run_module(host, "bpf_program", dict({"name": "getppid"}, **args), check=check)


def succeeded(result):
    assert not result.get("failed"), result
    return result


def pins(host):
    return sorted(host.run("find /sys/fs/bpf/xdpfleet 2>/dev/null").out.split())


def watched_calls(host, calls, watch=True):
    """Runs a process on host that makes `calls` getppid() calls, its pid in tr_pid when watch; returns the
    counts of the tracepoint and the tp_btf program."""
    return json.loads(on_host(host, """
        import json, os, struct
        from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
        pid, counts = libbpf.obj_get("%(pin_dir)s/tr_pid"), libbpf.obj_get("%(pin_dir)s/tr_counts")
        if %(watch)r:
            libbpf.map_update(pid, struct.pack("I", 0), struct.pack("I", os.getpid()))
        for _ in range(%(calls)d):
            os.getppid()
        print(json.dumps([struct.unpack("Q", libbpf.map_lookup(counts, struct.pack("I", i), 8))[0] for i in (0, 1)]))
    """ % {"pin_dir": PIN_DIR, "calls": calls, "watch": watch}))


def loaded_programs(host, prog_ids):
    """Which of prog_ids the kernel still has, after waiting for it to free those it let go."""
    left = set(prog_ids)
    deadline = time.monotonic() + GONE_WAIT
    while left and time.monotonic() < deadline:
        shown = json.loads(host.run("bpftool -j prog show").out)
        left &= set(item["id"] for item in shown)
        time.sleep(0.2)
    return left


def test_attach_count_upgrade_events_detach(host, objects):
    first = succeeded(program(host, object=objects["first"]))
    assert first["changed"] and [item["name"] for item in first["programs"]] == ["tr_btf", "tr_tracepoint"]
    assert [item["link_type"] for item in first["programs"]] == ["raw_tracepoint", "perf_event"]
    assert pins(host) == ["/sys/fs/bpf/xdpfleet"] + ["/sys/fs/bpf/xdpfleet/tracing" + path for path in (
        "", "/getppid", "/getppid/links", "/getppid/links/tr_btf", "/getppid/links/tr_tracepoint",
        "/getppid/tr_counts", "/getppid/tr_events", "/getppid/tr_pid")]

    assert watched_calls(host, 7) == [7, 7]
    assert watched_calls(host, 5, watch=False) == [7, 7], "another process's calls were counted"

    again = succeeded(program(host, object=objects["first"]))
    assert not again["changed"] and again["programs"] == first["programs"] and again["maps"] == first["maps"]

    checked = succeeded(program(host, check=True, object=objects["second"]))
    assert checked["changed"] and checked["programs"] == first["programs"]

    second = succeeded(program(host, object=objects["second"]))
    assert second["changed"] and second["maps"] == first["maps"], "the maps were not carried over"
    assert second["diff"]["before"]["object_sha256"] == first["object_sha256"] != second["object_sha256"]
    assert not set(item["link_id"] for item in second["programs"]) & set(item["link_id"] for item in first["programs"])
    assert loaded_programs(host, [item["prog_id"] for item in first["programs"]]) == set()
    assert watched_calls(host, 3) == [10, 10]

    drained = succeeded(run_module(host, "bpf_events", {"name": "getppid", "map": "tr_events",
                                                        "record_type": "tr_event", "count": 10, "timeout": 5}))
    assert [(event["generation"], event["calls"]) for event in drained["events"]] == (
        [(1, number) for number in range(1, 8)] + [(2, number) for number in range(8, 11)])
    assert set(event["comm"] for event in drained["events"]) == {"python"}
    empty = succeeded(run_module(host, "bpf_events", {"name": "getppid", "map": "tr_events", "timeout": 0.2}))
    assert not empty["changed"] and empty["events"] == []

    planned = succeeded(program(host, check=True, state="detached"))
    assert planned["changed"] and len(planned["pins_removed"]) == 5 and len(pins(host)) == 9  # 4 directories
    detached = succeeded(program(host, state="detached"))
    assert detached["changed"] and len(detached["pins_removed"]) == 5 and detached["programs"] == []
    assert pins(host) == []
    assert loaded_programs(host, [item["prog_id"] for item in second["programs"]]) == set()
    assert not succeeded(program(host, state="detached"))["changed"]


@pytest.mark.parametrize("kind, reason", [
    ("kprobe", "this kernel has no kprobes (built without CONFIG_KPROBES"),
    ("fentry", "the kernel refuses programs that attach through a BPF trampoline (fentry/fexit: EPERM")])
def test_kinds_this_kernel_lacks_are_refused_and_change_nothing(host, objects, kind, reason):
    refused = program(host, object=objects[kind])
    assert refused["failed"] and refused["msg"].startswith(reason), refused
    assert "use a tracepoint/ or tp_btf/ program" in refused["msg"]
    assert pins(host) in ([], ["/sys/fs/bpf/xdpfleet", "/sys/fs/bpf/xdpfleet/tracing",
                               "/sys/fs/bpf/xdpfleet/tracing/getppid"])


def test_the_write_monitor_example_gathers_the_writes_of_the_process_it_watches(fleet, host, tmp_path):
    """playbooks/examples/write_monitor.yml on the lab: a process on the host writes 20 times a second, another
    too; the events gathered as facts are those of the watched one alone, one per write the monitor counted."""
    writer = "import os, time\nwhile True:\n    os.write(1, b'x')\n    time.sleep(0.05)\n"
    processes = [subprocess.Popen(["nsenter", "-t", str(host.pid), "--net", "--mount", "--uts", "--", "python3",
                                   "-c", writer], stdout=subprocess.DEVNULL) for _copy in range(2)]
    try:
        watched = processes[0].pid
        done = playbook(fleet, REPO / "playbooks" / "examples" / "write_monitor.yml", tmp_path,
                        {"write_monitor_pid": watched, "write_monitor_seconds": 1})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        writes, by = re.search(r"(\d+) writes, \d+ bytes, by processes\s+([\d,]*)", done.stdout).groups()
        assert int(writes) > 0 and by == str(watched), done.stdout[-2000:]
        counted = json.loads(on_host(host, """
            import json, struct
            from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
            counts = libbpf.obj_get("/sys/fs/bpf/xdpfleet/tracing/write_monitor/wm_counts")
            libbpf.map_update(libbpf.obj_get("/sys/fs/bpf/xdpfleet/tracing/write_monitor/wm_pid"), bytes(4),
                              struct.pack("I", 1))  # a pid no process has: nothing more is counted
            print(struct.unpack("Q", libbpf.map_lookup(counts, bytes(4), 8))[0])
        """))
        assert counted >= int(writes)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    removed = playbook(fleet, REPO / "playbooks" / "examples" / "write_monitor.yml", tmp_path,
                       {"write_monitor_state": "detached"})
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert pins(host) == []


def test_the_packet_summary_example_gathers_the_packets_xdp_saw(fleet, host, tmp_path):
    """playbooks/examples/packet_summary.yml on the lab: the summaries of 5 UDP datagrams the client sent, and of
    the playbook's own SSH packets, gathered as facts; removed again."""
    example = REPO / "playbooks" / "examples" / "packet_summary.yml"
    first = playbook(fleet, example, tmp_path, {"packet_summary_seconds": 0.5})
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert re.search(r"%s:\d+ > %s:22 tcp \d+ bytes" % (re.escape(LAYOUT.bridge_address), re.escape(host.address)),
                     first.stdout), first.stdout[-3000:]
    sender = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 40000)); "
              "[s.sendto(b'x' * 18, (%r, 9999)) for _ in range(5)]" % host.address)
    assert fleet.client.run("python3 -c \"%s\"" % sender).rc == 0
    second = playbook(fleet, example, tmp_path, {"packet_summary_seconds": 0.5})
    assert second.returncode == 0, second.stdout[-3000:]
    assert "changed: [%s]" % host.name not in second.stdout.split("TASK [Gather")[0], "the program was attached again"
    udp = "%s:40000 > %s:9999 udp 60 bytes" % (LAYOUT.client_address, host.address)
    assert second.stdout.count(udp) == 5, second.stdout[-3000:]
    removed = playbook(fleet, example, tmp_path, {"packet_summary_state": "detached"})
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert "xdp" not in host.run("ip -d link show dev eth0").out.split("link/ether")[0]
