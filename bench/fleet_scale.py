"""Fleet scale: deploy_xdp.yml, update_rules.yml (one batch, then batches of 20%) and gather_stats.yml wall times with
forks 20 on a lab of 5, 10 and 20 hosts (prefix fs, 198.18.130.0/24), and the cost per host.

    .venv/bin/python bench/fleet_scale.py [--sizes 5 10 20] [--rules 50] [--keep]

Each size starts from hosts without the firewall (remove_xdp.yml, not timed). Prints a Markdown table.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".collections")]

from bench.addresses import host_prefixes  # noqa: E402
from tests.helpers.hosts import playbook  # noqa: E402
from tests.lab import Lab, Layout  # noqa: E402
from tests.lab.layout import REPO  # noqa: E402

LAYOUT = Layout("fs", 130)
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
FORKS = "20"


def rule_set(count, port):
    sources = host_prefixes(count, "198.19.0.0", avoid="%s/24" % LAYOUT.address(0))
    return [{"name": "r%d" % index, "action": "drop", "source": source, "protocol": "udp", "port": port}
            for index, source in enumerate(sources)]


def timed(lab, name, directory, variables):
    started = time.monotonic()
    run = playbook(lab, name, directory, variables, "-f", FORKS, timeout=3600)
    elapsed = time.monotonic() - started
    if run.returncode != 0:
        raise SystemExit("%s failed on %d hosts:\n%s" % (name, len(lab.hosts), run.stdout[-3000:]))
    return elapsed


def measure(size, rules, directory):
    lab = Lab.up(size, LAYOUT)
    playbook(lab, "remove_xdp.yml", directory, {}, "-f", FORKS, timeout=3600)
    deploy = {"xdp_firewall_object": str(FIREWALL), "xdp_rules": rule_set(rules, 53)}
    return {"deploy_xdp.yml": timed(lab, "deploy_xdp.yml", directory, deploy),
            "update_rules.yml serial 100%": timed(lab, "update_rules.yml", directory,
                                                  {"xdp_serial": "100%", "xdp_rules": rule_set(rules + 1, 54)}),
            "update_rules.yml serial 20%": timed(lab, "update_rules.yml", directory,
                                                 {"xdp_serial": "20%", "xdp_rules": rule_set(rules + 2, 55)}),
            "gather_stats.yml": timed(lab, "gather_stats.yml", directory, {})}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args(argv)
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print("| hosts | playbook | wall time (s) | per host (s) |\n|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        for size in args.sizes:
            for name, seconds in measure(size, args.rules, Path(directory)).items():
                print("| %d | %s | %.1f | %.2f |" % (size, name, seconds, seconds / size), flush=True)
    print("\nload average before: %s, after: %s (%d CPUs)" % (
        " ".join(load), " ".join(Path("/proc/loadavg").read_text().split()[:3]), len(os.sched_getaffinity(0))))
    if not args.keep:
        Lab.load(LAYOUT).down()


if __name__ == "__main__":
    main()
