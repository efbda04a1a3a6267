"""xdp_program at fleet scale: the wall time of attaching the firewall to 1 lab host and to 10 (forks 10),
printed as a ratio, and the task time of a no-change run as Ansible's junit callback records it.

    .venv/bin/python bench/program_deploy.py [--hosts 10] [--repeat 5] [--keep]

One lab (prefix pd, 198.18.140.0/24) of --hosts hosts; the 1-host figures use `--limit pd-h1` on the
same inventory. Every attach starts from detached hosts (not timed). Prints a Markdown table.
"""

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".collections")]

from tests.helpers.hosts import ansible_env, playbook  # noqa: E402
from tests.lab import Lab, Layout  # noqa: E402

LAYOUT = Layout("pd", 140)
FIREWALL = ROOT / "build" / "bpf" / "xdp_firewall.o"
PLAY = """- name: The firewall program on eth0
  hosts: all
  gather_facts: false
  tasks:
    - name: Attach or detach the firewall program
      xdpfleet.xdp.xdp_program:
        interface: eth0
        object: "{{ object }}"
        state: "{{ program_state }}"
"""


def run(lab, directory, state, limit, env=None):
    started = time.monotonic()
    done = playbook(lab, directory / "program.yml", directory, {"object": str(FIREWALL), "program_state": state},
                    "-f", "10", "--limit", limit, env=env)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit("xdp_program %s on %s failed:\n%s" % (state, limit, done.stdout[-3000:]))
    return elapsed


def attach_wall_time(lab, directory, limit):
    run(lab, directory, "detached", "all")
    return run(lab, directory, "attached", limit)


def no_change_task_times(lab, directory, repeat):
    """Per-host seconds of the xdp_program task in repeated no-change runs, from the junit callback."""
    times = []
    for attempt in range(repeat):
        with tempfile.TemporaryDirectory() as junit:
            env = ansible_env(ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.junit", JUNIT_OUTPUT_DIR=junit)
            run(lab, directory, "attached", "pd-h1", env=env)
            for report in glob.glob(os.path.join(junit, "*.xml")):
                times += [float(case.get("time")) for case in ElementTree.parse(report).iter("testcase")]
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5, help="no-change runs to time")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args(argv)
    subprocess.run(["make", "-s", "-C", str(ROOT / "bpf")], check=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    lab = Lab.up(args.hosts, LAYOUT)
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        (directory / "program.yml").write_text(PLAY)
        one = attach_wall_time(lab, directory, "pd-h1")
        fleet = attach_wall_time(lab, directory, "all")
        task_times = no_change_task_times(lab, directory, args.repeat)
    print("| measure | seconds |\n|---|---|")
    print("| attach, 1 host (wall) | %.2f |" % one)
    print("| attach, %d hosts, forks 10 (wall) | %.2f |" % (args.hosts, fleet))
    print("| ratio %d hosts / 1 host | %.2fx |" % (args.hosts, fleet / one))
    print("| no-change xdp_program task, 1 host, junit (median of %d) | %.3f |" % (
        len(task_times), statistics.median(task_times)))
    print("| no-change xdp_program task, 1 host, junit (max) | %.3f |" % max(task_times))
    print("\nload average before: %s, after: %s (%d CPUs)" % (
        " ".join(load), " ".join(Path("/proc/loadavg").read_text().split()[:3]), len(os.sched_getaffinity(0))))
    if not args.keep:
        lab.down()


if __name__ == "__main__":
    main()
