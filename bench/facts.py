"""Seconds xdp_facts (and xdp_stats) take on a host whose firewall holds 100,000 rules.

A 1-host lab of its own (prefix fb, 198.18.150.0/24): the firewall attached to eth0, N /32 source-prefix
rules applied with xdp_rules (overridden, as bench/control_plane.py does), packets counted, then
- module: the module run as its own process in the host's namespaces, as Ansible runs it there
  (interpreter start, argument parsing, the work, the JSON result), median of --runs; once with the
  hosts' /usr/bin/python3 and their python3-pyroute2 (the lab inventory's interpreter), once with the
  project's virtualenv;
- gather(): _facts.gather in one process on the host, median of --runs;
each in wall-clock and in CPU seconds (user + system): on a busy machine the CPU seconds show the cost
of the work better than the wall clock. The first rule drops the client's pings, the others
drop sources from 198.19.0.1/32 on (bench/addresses.py: never in the lab's subnet, whose SSH must keep working).
Each for xdp_facts' defaults, xdp_facts with xdp_modes=false (what the stats role gathers) and xdp_stats
writing its Prometheus textfile.

    .venv/bin/python bench/facts.py [--rules 100000] [--runs 5] [--keep]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".collections")]

from bench.addresses import host_prefixes  # noqa: E402
from tests.helpers.hosts import HOST_PYTHON, PYTHON, on_host, run_module  # noqa: E402
from tests.lab import Lab, Layout  # noqa: E402

LAYOUT = Layout("fb", 150)
FIREWALL = ROOT / "build" / "bpf" / "xdp_firewall.o"
TARGET = 0.3
TEXTFILE = "/var/lib/xdpfleet/textfile_collector/xdpfleet.prom"
MODULE_RUNS = {
    "xdp_facts (defaults)": ("xdp_facts", {"interfaces": ["eth0"]}),
    "xdp_facts xdp_modes=false": ("xdp_facts", {"interfaces": ["eth0"], "xdp_modes": False}),
    "xdp_stats with textfile": ("xdp_stats", {"interfaces": ["eth0"], "top_rules": 10, "textfile": TEXTFILE}),
}
# The hosts' interpreter and libraries, as Ansible runs modules on the lab; the project's virtualenv
# (newer Python and pyroute2) as a second opinion.
INTERPRETERS = {"host python3": HOST_PYTHON, "venv python": PYTHON}
GATHER = """
import json, statistics, time
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _facts

def median(modes):
    seconds, cpu = [], []
    for _ in range(%(runs)d):
        started, cpu_started = time.perf_counter(), time.process_time()
        facts = _facts.gather(["eth0"], top=10, modes=modes)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    assert facts["interfaces"]["eth0"]["rule_count"] == %(rules)d, facts["interfaces"]["eth0"]["rule_count"]
    return statistics.median(seconds), statistics.median(cpu)

print(json.dumps({"gather() xdp_modes=true": median(True), "gather() xdp_modes=false": median(False)}))
"""


def succeeded(result):
    if result.get("failed"):
        raise SystemExit("module failed: %s" % result.get("msg"))
    return result


def rules(client_address, count):
    no_ping = {"action": "drop", "protocol": "icmp", "source": client_address + "/32"}
    lab_subnet = "%s/24" % LAYOUT.address(0)
    return [no_ping] + [{"action": "drop", "source": prefix}
                        for prefix in host_prefixes(count - 1, "198.19.0.1", avoid=lab_subnet)]


def firewall_with_rules(lab, count):
    host = lab.hosts[0]
    subprocess.run(["make", "-s", "-C", str(ROOT / "bpf")], check=True)
    host.run("ip link set dev eth0 xdp off; rm -rf /sys/fs/bpf/xdpfleet /etc/xdpfleet")
    succeeded(run_module(host, "xdp_program", {"interface": "eth0", "object": str(FIREWALL)}))
    succeeded(run_module(host, "xdp_rules", {"interface": "eth0", "state": "overridden",
                                             "config": rules(lab.client.address, count)}))


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def module_median(host, name, args, runs, rules, python):
    """(wall, CPU) seconds of one module process, medians."""
    seconds, cpu = [], []
    for attempt in range(runs):
        started, cpu_started = time.perf_counter(), children_cpu()
        result = succeeded(run_module(host, name, args, python=python))
        seconds.append(time.perf_counter() - started)
        cpu.append(children_cpu() - cpu_started)
    assert result["ansible_facts"]["xdp"]["interfaces"]["eth0"]["rule_count"] == rules
    return statistics.median(seconds), statistics.median(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=100000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()
    lab = Lab.up(1, LAYOUT)
    try:
        host = lab.hosts[0]
        firewall_with_rules(lab, args.rules)
        lab.client.run("ping -n -q -c 20 -i 0.005 %s" % host.address, timeout=30)
        figures = {"%s, %s" % (label, where): module_median(host, name, module_args, args.runs, args.rules, python)
                   for where, python in INTERPRETERS.items() for label, (name, module_args) in MODULE_RUNS.items()}
        figures.update(json.loads(on_host(host, GATHER % {"runs": args.runs, "rules": args.rules})))
    finally:
        if not args.keep:
            lab.down()
    print("xdp_facts with %d rules on eth0: median of %d runs (seconds; load average %s, %d CPUs; target %.1f)"
          % (args.rules, args.runs, " ".join("%.2f" % load for load in os.getloadavg()),
             len(os.sched_getaffinity(0)), TARGET))
    print("%-46s %8s %8s" % ("", "wall", "CPU"))
    for label, (seconds, cpu) in figures.items():
        print("%-46s %8.3f %8.3f" % (label, seconds, cpu))


if __name__ == "__main__":
    main()
