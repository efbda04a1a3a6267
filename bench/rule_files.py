"""Big rule sets through the front door (issue 17): whole `ansible-playbook` runs of the firewall role with an
address set read from a text file, and with the same rules inline in an inventory's group_vars, beside an
`ansible.builtin.ping` play of the same inventory and hosts, all in one run.

    .venv/bin/python bench/rule_files.py [--quick] [--size N] [--hosts N] [--skip-inline] [--playbook P]

A. 1 lab host with the firewall attached and no rules; a set file of --size entries (one address a line, the
   text format): first apply, unchanged re-run, 1% of the entries replaced by addresses not in the set; then
   unchanged re-runs of that set and of a 1,000-entry one in turns (each after an untimed apply of its set), three
   of each, for the controller's CPU per host against the set's size (their medians).
B. the same three steps with the --size rules inline in group_vars (`xdp_rules: [{action: drop, source:
   a.b.c.d/32}, ...]`), and the ping play of that inventory.
C. on --hosts lab hosts, update_rules.yml with xdp_serial 100%: the 1% change of a --size set rolled through all
   of them, beside the 1% change of a 100-entry set.
A and B run --playbook: by default bench/apply_rules.yml (one xdp_rules task, as a play of one's own applies a
blocklist); update_rules.yml (with xdp_serial 100%) adds the rollout's snapshot and health checks.

For each run: wall seconds, its ratio to the anchor (the median of ping plays of the same hosts, one at the
start of the section and one before each measured run), the controller's CPU seconds (user + system of
ansible-playbook and every process under it, ssh included; not the module runs on the hosts) in all and per
host, and the largest resident set of one controller process (ansible-playbook or one of its forks), each run
measured in a fresh wrapper process. Set files are parsed into a cache in a private XDG_CACHE_HOME, so a first
apply parses its file as a user's first run does. The lab (prefix rb, 198.18.190.0/24), its SSH control sockets
and every file are removed at the end, also on failure or Ctrl-C.
--quick: 10,000 entries and 3 hosts unless --size/--hosts say otherwise (a smoke run; the targets are for the
full sizes).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".collections")]

import yaml  # noqa: E402

from bench.addresses import host_addresses  # noqa: E402
from tests.helpers.hosts import ansible_env, recap  # noqa: E402
from tests.lab import Lab, Layout  # noqa: E402
from tests.lab.layout import REPO  # noqa: E402

LAYOUT = Layout("rb", 190)
LAB_SUBNET = "%s/24" % LAYOUT.address(0)
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
FORKS = "20"
REPLACED_EVERY = 100  # 1% of the entries
CPU_COMPARISON_SIZE = 1000
ROLLOUT_COMPARISON_SIZE = 100
FULL_SIZE, FULL_HOSTS = 100000, 10
QUICK_SIZE, QUICK_HOSTS = 10000, 3
RUN_TIMEOUT = 3600
# The controller's CPU of an unchanged run is compared between two set sizes to 0.1 s: one run of each, one size
# after the other, is not steady enough for that on a shared machine.
UNCHANGED_REPEATS = 3
SET_NAME = "blocklist"
SERIAL_ALL = ("-e", "xdp_serial=100%")
PLAYBOOKS = {"apply_rules.yml": ROOT / "bench" / "apply_rules.yml", "update_rules.yml": "update_rules.yml",
             "deploy_xdp.yml": "deploy_xdp.yml"}

# Runs one command and writes its wall seconds, the CPU seconds and the largest resident set (KiB) of the
# processes under it to argv[1]: RUSAGE_CHILDREN of a process that has run nothing else.
MEASURED = """
import json, resource, subprocess, sys, time
started = time.monotonic()
returncode = subprocess.call(sys.argv[2:])
seconds = time.monotonic() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "max_rss_kib": usage.ru_maxrss}, out)
sys.exit(returncode)
"""

PING_PLAY = [{"name": "Ping", "hosts": "all", "gather_facts": False,
              "tasks": [{"name": "Ping", "ansible.builtin.ping": None}]}]


# --- the rule sets --------------------------------------------------------------------------------------------


def set_entries(count):
    """`count` distinct host addresses for a blocklist, none in the lab's subnet (the controller's SSH comes
    from there)."""
    return host_addresses(count, avoid=LAB_SUBNET)


def replaced_entries(count):
    """set_entries(count) with every REPLACED_EVERY-th entry (1%) swapped for an address the set does not hold,
    taken from further along the same generator."""
    replaced = count // REPLACED_EVERY
    addresses = set_entries(count + replaced)
    fresh = iter(addresses[count:])
    return [next(fresh) if index % REPLACED_EVERY == REPLACED_EVERY - 1 else address
            for index, address in enumerate(addresses[:count])]


def set_file_text(entries):
    """A blocklist in the text format: comments, a blank line, one address a line."""
    header = "# xdpfleet bench blocklist: %d addresses\n; written by bench/rule_files.py\n\n" % len(entries)
    return header + "".join(address + "\n" for address in entries)


def host_prefix(address):
    return address + ("/128" if ":" in address else "/32")


def inline_rules_text(entries):
    """group_vars text of one drop rule per address, written line by line (yaml.safe_dump takes seconds)."""
    return "xdp_rules:\n" + "".join("  - {action: drop, source: %s}\n" % host_prefix(address) for address in entries)


def set_rules_text(path):
    return yaml.safe_dump({"xdp_sets": {SET_NAME: {"file": str(path)}},
                           "xdp_rules": [{"name": SET_NAME, "action": "drop", "source_set": SET_NAME}]})


NO_RULES_TEXT = yaml.safe_dump({"xdp_rules": [], "xdp_allow_empty": True})


def write_atomically(path, text):
    """Replaces a file the way a blocklist updater does: a new file renamed over the old one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


# --- the runs ---------------------------------------------------------------------------------------------------


@dataclass
class Usage:
    seconds: float
    cpu: float
    max_rss_kib: int
    changed: int  # tasks reported changed, over all hosts

    @property
    def max_rss_mb(self):
        return self.max_rss_kib / 1024


def median(runs):
    """One Usage of several runs of the same thing: the median seconds and CPU, the largest resident set, the
    changed tasks of all."""
    return Usage(statistics.median(run.seconds for run in runs), statistics.median(run.cpu for run in runs),
                 max(run.max_rss_kib for run in runs), sum(run.changed for run in runs))


class Anchor:
    """Ping plays of one inventory taken through a section (at its start and before each measured run), so that
    the load of the shared machine drifting during the section weighs on the anchor as on the runs: each figure
    of the anchor is the median of theirs."""

    def __init__(self, bench, inventory, hosts):
        self.bench, self.inventory, self.hosts = bench, inventory, hosts
        self.runs = []
        self.take()

    def take(self):
        self.runs.append(self.bench.run(self.inventory, self.bench.ping_play))

    @property
    def usage(self):
        return median(self.runs)


@dataclass
class Row:
    key: str  # what targets() looks a row up by
    section: str
    step: str
    hosts: int
    usage: Usage
    anchor: Anchor
    target: str = ""
    note: str = ""


class PlaybookFailed(Exception):
    pass


class Bench:
    """Inventories of the lab's hosts with their own group_vars, and measured ansible-playbook runs on them."""

    def __init__(self, directory, lab):
        self.directory = directory
        self.lab = lab
        self.control_sockets = directory / "cp"
        self.control_sockets.mkdir()
        self.env = ansible_env(XDG_CACHE_HOME=str(directory / "cache"),
                               ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.control_sockets))
        self.ping_play = directory / "ping.yml"
        self.ping_play.write_text(yaml.safe_dump(PING_PLAY, sort_keys=False))
        self.rows = []

    def inventory(self, name, hosts, group_vars_text):
        """A directory inventory: the lab's inventory for the first `hosts` hosts, and group_vars/lab.yml."""
        lab_inventory = yaml.safe_load(self.lab.inventory.read_text())
        group = lab_inventory["all"]["children"]["lab"]
        group["hosts"] = {host.name: group["hosts"][host.name] for host in self.lab.hosts[:hosts]}
        directory = self.directory / "inventories" / name
        (directory / "group_vars").mkdir(parents=True, exist_ok=True)
        (directory / "hosts.yml").write_text(yaml.safe_dump(lab_inventory, sort_keys=False))
        (directory / "group_vars" / "lab.yml").write_text(
            "xdp_firewall_object: %s\n%s" % (FIREWALL, group_vars_text))
        return directory

    def run(self, inventory, playbook, *options):
        """Runs a playbook (a path, or a name under playbooks/) in a fresh measuring process; its Usage."""
        path = playbook if os.path.isabs(str(playbook)) else REPO / "playbooks" / playbook
        usage_file, output_file = self.directory / "usage.json", self.directory / "output.txt"
        argv = [sys.executable, "-c", MEASURED, str(usage_file), "ansible-playbook", "-i", str(inventory), str(path),
                "-f", FORKS] + list(options)
        with open(output_file, "w") as output:
            returncode = run_in_own_group(argv, output, self.env)
        text = output_file.read_text()
        hosts = recap(text)
        if returncode != 0 or not hosts or any(host["failed"] or host["unreachable"] for host in hosts.values()):
            raise PlaybookFailed("%s on %s failed (rc %d):\n%s" % (path.name, inventory.name, returncode, text[-4000:]))
        figures = json.loads(usage_file.read_text())
        return Usage(figures["seconds"], figures["cpu"], figures["max_rss_kib"],
                     sum(host["changed"] for host in hosts.values()))

    def measure(self, anchor, inventory, playbook, *options):
        """A measured run, after a ping play of the anchor."""
        anchor.take()
        return self.run(inventory, playbook, *options)

    def close_control_sockets(self):
        """Ends the SSH master connections the runs left (ControlPersist)."""
        for socket_path in self.control_sockets.iterdir():
            subprocess.run(["ssh", "-o", "ControlPath=%s" % socket_path, "-O", "exit", "lab"],
                           capture_output=True, timeout=30, check=False)


def run_in_own_group(argv, output, env):
    """Runs argv in its own process group and waits for it; on any exception here (Ctrl-C, SIGTERM) the whole
    group (the wrapper, ansible-playbook, its forks and ssh clients) is ended before the exception goes on."""
    process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                               start_new_session=True)
    try:
        return process.wait(timeout=RUN_TIMEOUT)
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise


def expect(usage, changed):
    """A note when the run's changed count is not what the step means."""
    if changed and usage.changed == 0:
        return "nothing reported changed"
    if not changed and usage.changed:
        return "changed=%d on an unchanged run" % usage.changed
    return ""


# --- the scenarios ----------------------------------------------------------------------------------------------


def three_steps(bench, section, inventory, playbook, anchor, write_full, write_replaced, targets=None):
    """First apply, unchanged re-run, 1% replaced, from a host with no rules: rows keyed "<section letter>
    first", "... unchanged" and "... 1%", with `targets` by the same keys."""
    letter, targets = section[0], targets or {}
    steps = (("first", "first apply", True, write_full), ("unchanged", "unchanged re-run", False, None),
             ("1%", "1% of the entries replaced", True, write_replaced))
    for key, step, changed, write in steps:
        if write:
            write()
        usage = bench.measure(anchor, inventory, playbook, *SERIAL_ALL)
        key = "%s %s" % (letter, key)
        bench.rows.append(Row(key, section, step, 1, usage, anchor, targets.get(key, ""), expect(usage, changed)))


def unchanged_by_size(bench, section, playbook, anchor, with_set, size):
    """Unchanged re-runs of the big set (as the host holds it) and of a 1,000-entry one, in turns (each after an
    untimed apply of its set), UNCHANGED_REPEATS of each: rows keyed "A unchanged big" and "A unchanged small"."""
    small_file = bench.directory / ("drop-%d.txt" % CPU_COMPARISON_SIZE)
    write_atomically(small_file, set_file_text(set_entries(CPU_COMPARISON_SIZE)))
    with_small_set = bench.inventory("set-%d-1" % CPU_COMPARISON_SIZE, 1, set_rules_text(small_file))
    sets = (("A unchanged small", CPU_COMPARISON_SIZE, with_small_set), ("A unchanged big", size, with_set))
    runs = dict((key, []) for key, _count, _inventory in sets)
    for _repeat in range(UNCHANGED_REPEATS):
        for key, _count, inventory in sets:
            bench.run(inventory, playbook, *SERIAL_ALL)
            runs[key].append(bench.measure(anchor, inventory, playbook, *SERIAL_ALL))
    for key, count, _inventory in reversed(sets):
        step = "unchanged re-run, %s-entry set (in turns, median of %d)" % (format(count, ","), UNCHANGED_REPEATS)
        target = "CPU/host: the two within 0.1 s" + ("; <= 1.5x ping" if key == "A unchanged big" else "")
        usage = median(runs[key])
        each = "CPU s of each: %s" % ", ".join("%.2f" % run.cpu for run in runs[key])
        note = " ".join([expect(usage, False), each]).strip()
        bench.rows.append(Row(key, section, step, 1, usage, anchor, target, note))


def one_host(bench, size, playbook, skip_inline):
    """Sections A and B on the lab's first host."""
    no_rules = bench.inventory("no-rules-1", 1, NO_RULES_TEXT)
    bench.run(no_rules, "deploy_xdp.yml")
    big_file = bench.directory / "drop.txt"
    with_set = bench.inventory("set-1", 1, set_rules_text(big_file))
    section = "A. %s-entry set file, 1 host, %s" % (format(size, ","), os.path.basename(str(playbook)))
    anchor = Anchor(bench, with_set, 1)
    three_steps(bench, section, with_set, playbook, anchor,
                lambda: write_atomically(big_file, set_file_text(set_entries(size))),
                lambda: write_atomically(big_file, set_file_text(replaced_entries(size))),
                {"A first": "<= 3 s", "A unchanged": "<= 1.5x ping", "A 1%": "<= 2.5 s"})
    unchanged_by_size(bench, section, playbook, anchor, with_set, size)
    if skip_inline:
        return

    bench.run(no_rules, playbook, *SERIAL_ALL)
    inline = bench.inventory("inline-1", 1, "")
    inline_vars = inline / "group_vars" / "lab.yml"
    header = inline_vars.read_text()
    section = "B. %s rules inline in group_vars, 1 host, %s" % (format(size, ","), os.path.basename(str(playbook)))
    anchor = Anchor(bench, with_set, 1)  # the same host, without the inline rules
    three_steps(bench, section, inline, playbook, anchor,
                lambda: write_atomically(inline_vars, header + inline_rules_text(set_entries(size))),
                lambda: write_atomically(inline_vars, header + inline_rules_text(replaced_entries(size))))
    bench.rows.append(Row("B ping", section, "ping play of this inventory", 1,
                          bench.measure(anchor, inline, bench.ping_play), anchor))


def rollout(bench, hosts, size):
    """Section C: the 1% change of a 100-entry set, then of a `size` one, rolled through `hosts` hosts."""
    no_rules = bench.inventory("no-rules-%d" % hosts, hosts, NO_RULES_TEXT)
    bench.run(no_rules, "deploy_xdp.yml")
    section = "C. update_rules.yml, xdp_serial 100%%, %d hosts" % hosts
    anchor = None
    for key, count in (("C small", ROLLOUT_COMPARISON_SIZE), ("C big", size)):
        set_file = bench.directory / ("fleet-drop-%d.txt" % count)
        write_atomically(set_file, set_file_text(set_entries(count)))
        inventory = bench.inventory("set-%d-%d" % (count, hosts), hosts, set_rules_text(set_file))
        anchor = anchor or Anchor(bench, inventory, hosts)
        bench.run(inventory, "update_rules.yml", *SERIAL_ALL)
        write_atomically(set_file, set_file_text(replaced_entries(count)))
        usage = bench.measure(anchor, inventory, "update_rules.yml", *SERIAL_ALL)
        target = "<= 1.5x the %d-entry rollout" % ROLLOUT_COMPARISON_SIZE if key == "C big" else ""
        bench.rows.append(Row(key, section, "1%% of a %s-entry set rolled" % format(count, ","), hosts, usage, anchor,
                              target, expect(usage, True)))


# --- the report -------------------------------------------------------------------------------------------------


def table(rows):
    lines = ["| step | hosts | wall s | x ping | CPU s | CPU s/host | x ping CPU | max RSS MB | changed | target "
             "| note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            ping = row.anchor.usage
            lines.append("| **%s** | | | | | | | | | | |" % section)
            cells = (len(row.anchor.runs), row.anchor.hosts, ping.seconds, ping.cpu, ping.cpu / row.anchor.hosts,
                     ping.max_rss_mb, ping.changed)
            lines.append("| ping play (anchor: median of %d, one before each run) | %d | %.2f | 1.00 | %.2f | %.2f "
                         "| 1.00 | %.0f | %d | | |" % cells)
        usage, ping = row.usage, row.anchor.usage
        lines.append("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %d | %s | %s |" % (
            row.step, row.hosts, usage.seconds, usage.seconds / ping.seconds, usage.cpu, usage.cpu / row.hosts,
            usage.cpu / ping.cpu, usage.max_rss_mb, usage.changed, row.target, row.note))
    return "\n".join(lines)


def targets(rows, size):
    """(target, measured, met) of each of the issue's targets that the rows measured."""
    row = dict((row.key, row) for row in rows).get
    checks = []
    if row("A first"):
        seconds = row("A first").usage.seconds
        checks.append(("first apply <= 3 s", "%.2f s" % seconds, seconds <= 3))
    for key, which in (("A unchanged", "the first"), ("A unchanged big", "median of %d in turns" % UNCHANGED_REPEATS)):
        if row(key):
            usage, ping = row(key).usage, row(key).anchor.usage
            ratio = usage.seconds / ping.seconds
            checks.append(("unchanged re-run <= 1.5x ping (%s)" % which, "%.2fx (%.2f s / %.2f s)" % (
                ratio, usage.seconds, ping.seconds), ratio <= 1.5))
    if row("A 1%"):
        seconds = row("A 1%").usage.seconds
        checks.append(("1% changed <= 2.5 s", "%.2f s" % seconds, seconds <= 2.5))
    if row("A unchanged big") and row("A unchanged small"):
        big, small = row("A unchanged big").usage.cpu, row("A unchanged small").usage.cpu
        checks.append(("unchanged, controller CPU per host, %s vs %s entries, within 0.1 s" % (
            format(size, ","), format(CPU_COMPARISON_SIZE, ",")), "%+.2f s (%.2f s vs %.2f s)" % (
            big - small, big, small), abs(big - small) <= 0.1))
    if row("C small") and row("C big"):
        big, small = row("C big").usage.seconds, row("C small").usage.seconds
        checks.append(("%d-host rollout of the 1%% change <= 1.5x the %d-entry one" % (
            row("C big").hosts, ROLLOUT_COMPARISON_SIZE), "%.2fx (%.2f s / %.2f s)" % (
            big / small, big, small), big / small <= 1.5))
    big_set_runs = [row(key) for key in ("A first", "A unchanged", "A 1%", "A unchanged big", "C big") if row(key)]
    if big_set_runs:
        memory = max(run.usage.max_rss_mb for run in big_set_runs)
        checks.append(("controller memory per fork <= 300 MB (runs with the %s-entry set)" % format(size, ","),
                       "%.0f MB" % memory, memory <= 300))
    return checks


def report(rows, arguments, load_before):
    print("\n" + table(rows))
    scaled = "" if (arguments.size, arguments.hosts) == (FULL_SIZE, FULL_HOSTS) else \
        ", set for %s entries and %d hosts; this run: %s and %d" % (
            format(FULL_SIZE, ","), FULL_HOSTS, format(arguments.size, ","), arguments.hosts)
    print("\nTargets (issue 17)%s:" % scaled)
    for target, measured, met in targets(rows, arguments.size):
        print("- %-72s %-28s %s" % (target, measured, "met" if met else "MISSED"))
    print("\nCPU = user + system seconds of ansible-playbook and every process under it on the controller; "
          "max RSS = the largest resident set of one of those processes.")
    print("load average before: %s, after: %s (%d CPUs)" % (
        " ".join(load_before), " ".join(Path("/proc/loadavg").read_text().split()[:3]), len(os.sched_getaffinity(0))))


def arguments_of(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smaller defaults: %s entries, %d hosts" % (format(QUICK_SIZE, ","), QUICK_HOSTS))
    parser.add_argument("--size", type=int, help="entries of the big set (default %s)" % format(FULL_SIZE, ","))
    parser.add_argument("--hosts", type=int, help="hosts of the rollout (default %d)" % FULL_HOSTS)
    parser.add_argument("--skip-inline", action="store_true", help="leave out B (the rules inline in group_vars)")
    parser.add_argument("--playbook", default="apply_rules.yml", choices=list(PLAYBOOKS),
                        help="the playbook of A and B (default %(default)s)")
    arguments = parser.parse_args(argv)
    arguments.playbook = PLAYBOOKS[arguments.playbook]
    arguments.size = arguments.size or (QUICK_SIZE if arguments.quick else FULL_SIZE)
    arguments.hosts = arguments.hosts or (QUICK_HOSTS if arguments.quick else FULL_HOSTS)
    if arguments.size < REPLACED_EVERY or arguments.hosts < 1:
        parser.error("--size must be at least %d and --hosts at least 1" % REPLACED_EVERY)
    return arguments


class Stopped(Exception):
    """SIGTERM, handled as Ctrl-C is: the lab comes down and the runs made so far are reported."""


def stop_on_sigterm(signum, frame):
    raise Stopped("terminated")


def main(argv=None):
    arguments = arguments_of(argv)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    print("bench/rule_files.py: %s-entry sets, %d hosts for the rollout, lab %s on %s" % (
        format(arguments.size, ","), arguments.hosts, LAYOUT.prefix, LAB_SUBNET), flush=True)
    lock_file_was_there = LAYOUT.lock_path.exists()
    directory = Path(tempfile.mkdtemp(prefix="xdpfleet-bench-"))
    bench, failure = None, None
    try:
        started = time.monotonic()
        bench = Bench(directory, Lab.up(1, LAYOUT))
        one_host(bench, arguments.size, arguments.playbook, arguments.skip_inline)
        bench.lab = Lab.up(arguments.hosts, LAYOUT)
        rollout(bench, arguments.hosts, arguments.size)
        print("all runs done in %.0f s" % (time.monotonic() - started))
    except PlaybookFailed as error:
        failure = error
    except (KeyboardInterrupt, Stopped) as error:
        failure = "stopped (%s) before all runs were done" % (str(error) or "Ctrl-C")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not leave half a lab
            signal.signal(signum, signal.SIG_IGN)
        if bench:
            bench.close_control_sockets()
        Lab.load(LAYOUT).down()
        if not lock_file_was_there:
            LAYOUT.lock_path.unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
    report(bench.rows if bench else [], arguments, load_before)
    if failure:
        raise SystemExit("\n%s" % failure)


if __name__ == "__main__":
    main()
