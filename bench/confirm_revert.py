"""Time to revert an unconfirmed change: from the deadline of an xdp_rules change armed with confirm_within to the
moment the kernel holds the previous rule set again (its active rule-set slot switched back), for rule sets of a
few sizes.

Each round applies a set of N rules (one /32 drop rule per source), then runs the xdp_rules module as its own
process, as Ansible runs it on a host, adding one rule with confirm_within=1; the module arms the revert (a timer
process, as where systemd does not run) and exits. This process polls the firewall's config map until the active
slot switches back, and waits for the revert's record and for the timer process to end.

Everything runs in a network namespace with a veth pair that this script creates and removes, in a private mount
namespace holding its own bpffs, /etc/xdpfleet and /run. Addresses: 198.18.0.0/15 only.

    flock /tmp/xf-bench.lock .venv/bin/python bench/confirm_revert.py [--sizes 1,10000,100000] [--rounds 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".collections")
sys.path[:0] = [ROOT, COLLECTIONS]

from bench.addresses import host_prefixes  # noqa: E402
from bench.control_plane import FIREWALL, OURS, measured_inside, run_module  # noqa: E402

INTERFACE = OURS
PIN_DIR = "/sys/fs/bpf/xdpfleet/%s" % INTERFACE
CONFIRM_WITHIN = 1


def rule_set(count):
    return [{"action": "drop", "source": prefix} for prefix in host_prefixes(count)]


def one_round(maps, rules):
    """(Seconds from the deadline to the switch back, seconds from the deadline to the "reverted" record)."""
    from ansible_collections.xdpfleet.xdp.plugins.action.xdp_rules import module_args_with_content
    from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_confirm, _fw_kernel, _fw_run

    _fw_run.run({"interface": INTERFACE, "state": "overridden", "config": rules}, environ={})
    before = _fw_kernel.read_config(maps)[0]
    extra = {"action": "drop", "source": "198.19.255.255/32"}
    _seconds, result = run_module("xdp_rules", module_args_with_content(
        {"interface": INTERFACE, "state": "overridden", "config": rules + [extra], "confirm_within": CONFIRM_WITHIN}))
    armed = _fw_kernel.read_config(maps)[0]
    assert armed != before and result["revert"]["armed"], result
    deadline, pid = result["revert"]["deadline"], _fw_confirm.read_record(INTERFACE)["timer"]["pid"]
    while _fw_kernel.read_config(maps)[0] == armed:
        if time.time() > deadline + 30:
            raise SystemExit("the revert did not fire within 30 s of its deadline")
    switched = time.time()
    while _fw_confirm.status(INTERFACE)["reverted"] is None or running(pid):
        time.sleep(0.001)
    return switched - deadline, _fw_confirm.status(INTERFACE)["reverted"]["at"] - deadline


def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except IOError:
        return False


def inside(arguments):
    """Runs in the namespace: mounts a private bpffs, /etc/xdpfleet and /run, attaches, measures, prints JSON."""
    subprocess.run("mount --make-rprivate / && mount -t bpf bpf /sys/fs/bpf && mkdir -p /etc/xdpfleet "
                   "&& mount -t tmpfs tmpfs /etc/xdpfleet && mount -t tmpfs tmpfs /run", shell=True, check=True)
    from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel

    run_module("xdp_program", {"interface": INTERFACE, "object": FIREWALL})
    figures = {}
    with _fw_kernel.pinned_maps(PIN_DIR) as maps:
        for size in map(int, arguments.sizes.split(",")):
            rules = rule_set(size)
            figures[size] = [one_round(maps, rules) for _round in range(arguments.rounds)]
    print(json.dumps(figures))


def report(figures, arguments):
    load = " ".join("%.1f" % average for average in os.getloadavg())
    print("xdp_rules confirm_within=%d: seconds from the deadline until the kernel holds the previous set again "
          "(%d rounds; load average %s)" % (CONFIRM_WITHIN, arguments.rounds, load))
    print("%10s %12s %12s %16s" % ("rules", "median", "max", "record, median"))
    for size, rounds in figures.items():
        switched, recorded = zip(*rounds)
        print("%10s %12.3f %12.3f %16.3f" % (size, statistics.median(switched), max(switched),
                                             statistics.median(recorded)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10000,100000", help="rule-set sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.inside:
        return inside(arguments)
    report(measured_inside(__file__, ["--sizes", arguments.sizes, "--rounds", str(arguments.rounds)]), arguments)


if __name__ == "__main__":
    main()
