"""Fleet scale: deploy_xdp.yml, update_rules.yml (one batch, then batches of 20%) and gather_stats.yml wall times with
forks 20 on a lab of 5, 10 and 20 hosts (prefix fs, 198.18.130.0/24), the cost per host, and what the controller
spends: CPU seconds and peak memory of ansible-playbook, everything it starts (workers, ssh clients) and its ssh
masters.

    .venv/bin/python bench/fleet_scale.py [--sizes 5 10 20] [--rules 50] [--prefix fs --subnet 130] [--keep]

Each size starts from hosts without the firewall (remove_xdp.yml, not timed). Prints a Markdown table.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".collections")]

from bench.addresses import host_prefixes  # noqa: E402
from tests.helpers.hosts import ansible_env, playbook  # noqa: E402
from tests.lab import Lab, Layout  # noqa: E402
from tests.lab.layout import REPO  # noqa: E402

FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
FORKS = "20"


def rule_set(count, port, layout):
    sources = host_prefixes(count, "198.19.0.0", avoid="%s/24" % layout.address(0))
    return [{"name": "r%d" % index, "action": "drop", "source": source, "protocol": "udp", "port": port}
            for index, source in enumerate(sources)]


def children_of(pids):
    """Every process below the given ones, from /proc's parent links."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            parents[int(entry)] = int(Path("/proc/%s/stat" % entry).read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    found, frontier = set(), set(pids)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def cmdline(pid):
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return b""


def pss_kb(pid):
    try:
        rollup = Path("/proc/%d/smaps_rollup" % pid).read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)


def cpu_ticks(pid):
    try:
        fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


class Controller(threading.Thread):
    """What the controller spends on one playbook run, sampled every 0.2 s: ansible-playbook and its descendants
    (workers, ssh clients), plus the ssh ControlPersist masters of this bench's control path, which leave that
    tree when they daemonize and carry the connections' encryption. Peak memory is PSS (shared pages split between
    their users, so forked workers are not counted twice). The lab's sshd and the hosts' work are not in it."""

    def __init__(self, control_dir):
        super().__init__(daemon=True)
        self.control_dir = control_dir.encode()
        self.peak_kb = 0
        self.masters_at_start = self.master_ticks()
        self.masters_now = dict(self.masters_at_start)
        self.done = threading.Event()

    def master_ticks(self):
        ticks = ((pid, cpu_ticks(pid)) for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if self.control_dir in cmdline(pid))
        return {pid: value for pid, value in ticks if value is not None}

    def run(self):
        while not self.done.wait(0.2):
            roots = {pid for pid in children_of({os.getpid()}) if b"ansible-playbook" in cmdline(pid)}
            self.masters_now.update(self.master_ticks())
            processes = roots | children_of(roots) | set(self.masters_now)
            self.peak_kb = max(self.peak_kb, sum(pss_kb(pid) for pid in processes))

    def masters_cpu(self):
        ticks = sum(value - self.masters_at_start.get(pid, 0) for pid, value in self.masters_now.items())
        return ticks / os.sysconf("SC_CLK_TCK")


def timed(lab, name, directory, variables):
    """Wall time, controller CPU seconds (user + system of the finished playbook's process tree, as ansible-playbook
    waits for its workers and they for their ssh clients, and of the ssh masters) and peak memory in MB."""
    control_dir = str(directory / "cp")
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    controller = Controller(control_dir)
    controller.start()
    started = time.monotonic()
    run = playbook(lab, name, directory, variables, "-f", FORKS, timeout=3600,
                   env=ansible_env(ANSIBLE_SSH_CONTROL_PATH_DIR=control_dir))
    elapsed = time.monotonic() - started
    controller.done.set()
    controller.join()
    controller.masters_now.update(controller.master_ticks())
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise SystemExit("%s failed on %d hosts:\n%s" % (name, len(lab.hosts), run.stdout[-3000:]))
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return elapsed, cpu + controller.masters_cpu(), controller.peak_kb / 1024


def measure(size, rules, directory, layout):
    lab = Lab.up(size, layout)
    playbook(lab, "remove_xdp.yml", directory, {}, "-f", FORKS, timeout=3600)
    deploy = {"xdp_firewall_object": str(FIREWALL), "xdp_rules": rule_set(rules, 53, layout)}
    return {"deploy_xdp.yml": timed(lab, "deploy_xdp.yml", directory, deploy),
            "update_rules.yml serial 100%": timed(lab, "update_rules.yml", directory,
                                                  {"xdp_serial": "100%", "xdp_rules": rule_set(rules + 1, 54, layout)}),
            "update_rules.yml serial 20%": timed(lab, "update_rules.yml", directory,
                                                 {"xdp_serial": "20%", "xdp_rules": rule_set(rules + 2, 55, layout)}),
            "gather_stats.yml": timed(lab, "gather_stats.yml", directory, {})}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--prefix", default="fs", help="the lab's prefix (tests.lab Layout)")
    parser.add_argument("--subnet", type=int, default=130, help="the lab's subnet: 198.18.SUBNET.0/24")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args(argv)
    layout = Layout(args.prefix, args.subnet)
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print("| hosts | playbook | wall time (s) | per host (s) | controller CPU (s) | CPU per host (s) "
          "| controller peak memory (MB) |\n|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        for size in args.sizes:
            for name, (seconds, cpu, memory) in measure(size, args.rules, Path(directory), layout).items():
                print("| %d | %s | %.1f | %.2f | %.1f | %.2f | %.0f |" % (
                    size, name, seconds, seconds / size, cpu, cpu / size, memory), flush=True)
    print("\nload average before: %s, after: %s (%d CPUs)" % (
        " ".join(load), " ".join(Path("/proc/loadavg").read_text().split()[:3]), len(os.sched_getaffinity(0))))
    if not args.keep:
        Lab.load(layout).down()


if __name__ == "__main__":
    main()
