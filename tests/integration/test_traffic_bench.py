"""bench/traffic.py's smoke run (the firewall with 10 rules, half a second of dropped and of passed frames): it
counts what it sent, and it leaves the machine as it found it, also when interrupted.

Counts are compared exactly: the generator's batch (64 frames) is smaller than the veth's ring (256), and veth
hands each batch to the receiver in the softirq that runs at the end of the batch, in the generator's own
context, so no frame is dropped between the two ends; a difference is a counting error of the bench.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf

BENCH = Path(__file__).resolve().parents[2] / "bench" / "traffic.py"
NAMESPACES = ("tb-gen", "tb-rx")
BENCH_PROGRAMS = ("traffic_gen", "bare_drop")  # named by bench/traffic.bpf.c only, unlike the firewall's


def smoke_command(*arguments):
    return [sys.executable, str(BENCH), "--smoke", "--seconds", "0.5"] + list(arguments)


def program_names():
    """Names of the BPF programs loaded on the machine now."""
    library = _libbpf.library()
    names, current, following = [], 0, ctypes.c_uint32()
    while library.bpf_prog_get_next_id(current, ctypes.byref(following)) == 0:
        current = following.value
        try:
            fd = _libbpf.prog_fd_by_id(current)
        except _libbpf.LibbpfError:  # freed since
            continue
        try:
            names.append(_libbpf.prog_info(fd)["name"])
        finally:
            os.close(fd)
    return names


def bpf_stats_enabled():
    with open("/proc/sys/kernel/bpf_stats_enabled") as stats:
        return stats.read().strip()


def assert_nothing_left(stats_before):
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [line for line in namespaces.splitlines() if line.split()[0] in NAMESPACES], namespaces
    assert not set(BENCH_PROGRAMS) & set(program_names())
    assert bpf_stats_enabled() == stats_before  # the bench's BPF_ENABLE_STATS ended with it


def test_smoke_run_counts_every_frame_it_sent(tmp_path):
    measured_file, stats_before = tmp_path / "traffic.json", bpf_stats_enabled()
    done = subprocess.run(smoke_command("--json", str(measured_file)), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    measured = json.loads(measured_file.read_text())
    assert measured["generator"].startswith("BPF_PROG_RUN live frames"), measured["generator"]
    assert [(row["program"], row["rules"], row["traffic"]) for row in measured["rows"]] == [
        ("xdpfleet", 10, "dropped"), ("xdpfleet", 10, "passed")]
    for row in measured["rows"]:
        assert row["sent"] > 0
        assert row["received"] == row["sent"], row  # the receiving program's run_cnt
        assert row["verdict_packets"] == row["sent"], row  # the firewall's own xf_stats, for the expected verdict
        assert row["rx_cpus"] == [measured["cpu"]], row  # received on the generator's CPU, as the table says
        assert row["mpps"] > 0
    assert "| xdpfleet | 10 | dropped |" in done.stdout
    assert_nothing_left(stats_before)


def as_from_a_terminal():
    """Ctrl-C reaches a command started from a terminal; a suite run in the background (nohup, `&` in a
    script) ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_while_sending_leaves_nothing():
    stats_before = bpf_stats_enabled()
    bench = subprocess.Popen(smoke_command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             preexec_fn=as_from_a_terminal)
    try:
        first = bench.stderr.readline()  # printed once the first measurement is done: the second is under way
        assert "xdpfleet" in first, first
        bench.send_signal(signal.SIGINT)
        rest = bench.communicate(timeout=60)[1]
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 130, rest
    assert "interrupted" in rest
    assert_nothing_left(stats_before)
