"""xdp_program at fleet scale: the wall time of attaching the firewall to 1 lab host and to 10 (forks 10),
printed as a ratio beside the same ratio for a play of ansible.builtin.ping in the same run (the anchor: every
lab host shares this machine's CPUs, so a play's 10-host time grows with the CPU seconds each host costs,
which the table also gives, summed over the whole machine from /proc/stat), and the task time of a no-change
xdp_program task as Ansible's junit callback records it, beside ansible.builtin.ping's in the same run (the
first use of a module in a run, and the second).

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
from collections import defaultdict
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
# A task's time in a run is larger the first time the run uses its module: Ansible builds the module's
# AnsiballZ payload (the module and every module_utils file it imports) once per run. ping, the
# smallest module there is, sets the floor for both.
NO_CHANGE_PLAY = """- name: A no-change xdp_program task beside ansible.builtin.ping
  hosts: all
  gather_facts: false
  tasks:
    - name: connect
      ansible.builtin.raw: "true"
      changed_when: false
    - name: ping-first
      ansible.builtin.ping:
    - name: xdp_program-first
      xdpfleet.xdp.xdp_program:
        interface: eth0
        object: "{{ object }}"
    - name: xdp_program-again
      xdpfleet.xdp.xdp_program:
        interface: eth0
        object: "{{ object }}"
    - name: ping-again
      ansible.builtin.ping:
"""


PING_PLAY = """- name: The anchor, ansible.builtin.ping
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""


def busy_cpu_seconds():
    """CPU seconds this machine has spent on anything but idling, from /proc/stat."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def run(lab, directory, play, limit, extra_vars):
    """(wall seconds, machine CPU seconds) of one run of play."""
    started, cpu = time.monotonic(), busy_cpu_seconds()
    done = playbook(lab, directory / play, directory, extra_vars, "-f", "10", "--limit", limit)
    elapsed, cpu = time.monotonic() - started, busy_cpu_seconds() - cpu
    if done.returncode != 0:
        raise SystemExit("%s on %s failed:\n%s" % (play, limit, done.stdout[-3000:]))
    return elapsed, cpu


def attach_times(lab, directory, limit):
    """(wall, CPU seconds) of attaching the firewall to limit, every host detached before (not timed)."""
    run(lab, directory, "program.yml", "all", {"object": str(FIREWALL), "program_state": "detached"})
    return run(lab, directory, "program.yml", limit, {"object": str(FIREWALL), "program_state": "attached"})


def no_change_task_times(lab, directory, repeat):
    """{task name: [seconds]} of NO_CHANGE_PLAY's tasks on pd-h1 in repeated runs, from the junit callback."""
    times = defaultdict(list)
    for attempt in range(repeat):
        with tempfile.TemporaryDirectory() as junit:
            env = ansible_env(ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.junit", JUNIT_OUTPUT_DIR=junit)
            done = playbook(lab, directory / "no_change.yml", directory, {"object": str(FIREWALL)},
                            "--limit", "pd-h1", env=env)
            if done.returncode != 0 or "changed=0" not in done.stdout:
                raise SystemExit("the no-change play failed or changed something:\n%s" % done.stdout[-3000:])
            for report in glob.glob(os.path.join(junit, "*.xml")):
                for case in ElementTree.parse(report).iter("testcase"):
                    times[case.get("name").split(": ", 1)[1].split(" ")[0]].append(float(case.get("time")))
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
        (directory / "no_change.yml").write_text(NO_CHANGE_PLAY)
        (directory / "ping.yml").write_text(PING_PLAY)
        plays = {"xdp_program attach": [attach_times(lab, directory, limit) for limit in ("pd-h1", "all")],
                 "ansible.builtin.ping": [run(lab, directory, "ping.yml", limit, {}) for limit in ("pd-h1", "all")]}
        task_times = no_change_task_times(lab, directory, args.repeat)
    print("| play | 1 host: wall / CPU s | %d hosts, forks 10: wall / CPU s | wall ratio |\n|---|---|---|---|"
          % args.hosts)
    for play, ((one, one_cpu), (fleet, fleet_cpu)) in plays.items():
        print("| %s | %.2f / %.2f | %.2f / %.2f | %.2fx |" % (play, one, one_cpu, fleet, fleet_cpu, fleet / one))
    print("\n| measure | seconds |\n|---|---|")
    for use in ("first", "again"):
        program, ping = (task_times["%s-%s" % (module, use)] for module in ("xdp_program", "ping"))
        print("| no-change xdp_program task / ansible.builtin.ping, %s use in the run, junit (median of %d) "
              "| %.3f / %.3f |" % ("first" if use == "first" else "second", len(program),
                                   statistics.median(program), statistics.median(ping)))
    print("\nload average before: %s, after: %s (%d CPUs)" % (
        " ".join(load), " ".join(Path("/proc/loadavg").read_text().split()[:3]), len(os.sched_getaffinity(0))))
    if not args.keep:
        lab.down()


if __name__ == "__main__":
    main()
