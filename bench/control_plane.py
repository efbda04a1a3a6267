"""Seconds the xdp_rules control plane takes, and xdp-filter's CLI as the anchor, in one run.

1. `overridden` of 100,000 /32 prefixes from empty, the idempotent re-run, a 1% change (1,000 of
   the 100,000 rules flip their action), 1% replaced (1,000 rules get another source prefix, at
   the same positions) and 1% removed + added (1,000 rules removed, 1,000 new ones at the end), each
   measured twice:
   - module: the xdp_rules module run as its own process on the host, as Ansible runs it there
     (interpreter start, the arguments as the action plugin sends them (config as JSON text) and
     their parsing, the work, the JSON result; before/after are left out for 100,000 rules);
   - core: the module's work alone (_fw_run.run: read the kernel, plan, lockout guard, compile
     (not for the 1% change, which keeps every match: only its rules are packed and written),
     batch writes into the inactive slot, switch, the same writes into the slot left,
     desired-state file), in one process.
   Each is given in wall-clock seconds and in CPU seconds (user + system of the process): on a
   busy machine the CPU seconds show the cost of the work better than the wall clock.
2. 1,000 source-address rules added with xdp-filter's CLI, one process per rule (its default allow
   policy, LIBXDP_SKIP_DISPATCHER=1), against the same 1,000 rules with one xdp_rules module run;
   printed as a ratio.

Everything runs in a network namespace with a veth pair that this script creates and removes, in a
private mount namespace holding its own bpffs, /etc/xdpfleet and /run (the host lock). Addresses: 198.18.0.0/15 only.

    .venv/bin/python bench/control_plane.py [--prefixes N] [--cli-rules N]
"""

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".collections")
sys.path[:0] = [ROOT, COLLECTIONS]

from pyroute2 import IPRoute, netns  # noqa: E402

from bench.addresses import host_addresses, host_prefixes  # noqa: E402

FIREWALL = os.path.join(ROOT, "build", "bpf", "xdp_firewall.o")
MODULES = os.path.join(ROOT, "plugins", "modules")
NAMESPACE, OURS, THEIRS = "xfbench-cp", "xfcp0", "xfcp1"
TARGETS = {"from empty": 3.0, "idempotent re-run": 1.0, "1% change": 1.0, "1% replaced": 1.0,
           "1% removed + added": 1.0}


def prefix_rules(count, changed_every=0):
    return [{"action": "pass" if changed_every and index % changed_every == 0 else "drop", "source": prefix}
            for index, prefix in enumerate(host_prefixes(count))]


def other_prefixes(count, extra):
    """`extra` prefixes that prefix_rules(count) does not have."""
    return host_prefixes(count + extra)[count:]


def replaced_prefixes(count, replaced_every):
    """prefix_rules(count) with every replaced_every-th source swapped for one none of them has."""
    others = iter(other_prefixes(count, count // replaced_every + 1))
    return [dict(rule, source=next(others)) if index % replaced_every == 0 else rule
            for index, rule in enumerate(prefix_rules(count))]


def removed_and_added(count, every):
    """prefix_rules(count) without every every-th rule, and as many new rules at the end: later rules
    move up, so every position after the first removed one changes."""
    kept = [rule for index, rule in enumerate(prefix_rules(count)) if index % every]
    return kept + [{"action": "drop", "source": prefix} for prefix in other_prefixes(count, count - len(kept))]


# --- inside the namespace ---------------------------------------------------------------------------


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_module(name, args):
    """Runs plugins/modules/<name>.py as its own process; returns ((seconds, CPU seconds), result)."""
    started, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run([sys.executable, os.path.join(MODULES, name + ".py")],
                          input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    seconds = time.perf_counter() - started, children_cpu() - cpu
    result = json.loads(done.stdout)
    if result.get("failed"):
        raise SystemExit("%s failed: %s" % (name, result.get("msg")))
    return seconds, result


def overridden(config):
    return {"interface": OURS, "state": "overridden", "config": config}


def core_seconds(config, expect_changed):
    from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_run

    gc.disable()  # as the module's main() runs it
    try:
        started, cpu = time.perf_counter(), time.process_time()
        result = _fw_run.run(overridden(config), environ={})
        seconds = time.perf_counter() - started, time.process_time() - cpu
    finally:
        gc.enable()
    assert result["changed"] == expect_changed, result["summary"]
    return seconds


def module_seconds(config, expect_changed):
    from ansible_collections.xdpfleet.xdp.plugins.action.xdp_rules import module_args_with_content

    seconds, result = run_module("xdp_rules", module_args_with_content(overridden(config)))
    assert result["changed"] == expect_changed, result["summary"]
    return seconds


def empty_rules():
    run_module("xdp_rules", overridden([]))


def prefix_steps(count, measure):
    """{step: (seconds, CPU seconds)} of from empty, idempotent re-run, 1% of the actions flipped, 1% of
    the prefixes replaced and 1% removed + added (each change from the full set)."""
    empty_rules()
    full = prefix_rules(count)
    steps = {"from empty": measure(full, True), "idempotent re-run": measure(full, False),
             "1% change": measure(prefix_rules(count, changed_every=100), True)}
    measure(full, True)
    steps["1% replaced"] = measure(replaced_prefixes(count, 100), True)
    measure(full, True)
    steps["1% removed + added"] = measure(removed_and_added(count, 100), True)
    return steps


def cli_seconds(count):
    subprocess.run(["xdp-filter", "load", "-m", "native", "-p", "allow", THEIRS], check=True)
    started = time.perf_counter()
    addresses = host_addresses(count, "198.19.0.1")
    for address in addresses:
        subprocess.run(["xdp-filter", "ip", "-m", "src", address], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    listed = subprocess.run(["xdp-filter", "status"], check=True, capture_output=True, text=True).stdout.split()
    assert set(addresses) <= set(listed), "xdp-filter lost rules"
    return seconds


def inside(arguments):
    """Runs in the namespace: mounts a private bpffs and /etc/xdpfleet, attaches, measures, prints JSON."""
    subprocess.run("mount --make-rprivate / && mount -t bpf bpf /sys/fs/bpf && mkdir -p /etc/xdpfleet "
                   "&& mount -t tmpfs tmpfs /etc/xdpfleet && mount -t tmpfs tmpfs /run", shell=True, check=True)
    run_module("xdp_program", {"interface": OURS, "object": FIREWALL})
    figures = {"core": prefix_steps(arguments.prefixes, core_seconds),
               "module": prefix_steps(arguments.prefixes, module_seconds)}
    empty_rules()
    figures["xdp-filter CLI"] = cli_seconds(arguments.cli_rules)
    figures["xdp_rules"] = module_seconds(prefix_rules(arguments.cli_rules), True)[0]
    print(json.dumps(figures))


# --- outside: the namespace and the report -------------------------------------------------------------------


def make_namespace():
    remove_namespace()
    netns.create(NAMESPACE)
    with IPRoute(netns=NAMESPACE) as ipr:
        ipr.link("add", ifname=OURS, kind="veth", peer=THEIRS)
        for name in (OURS, THEIRS):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")


def remove_namespace():
    if NAMESPACE in netns.listnetns():
        netns.remove(NAMESPACE)  # the veths go with it, and the XDP programs with the veths


def report(figures, arguments):
    print("xdp_rules control plane, overridden of %d /32 prefixes (seconds; load average %s)"
          % (arguments.prefixes, " ".join("%.1f" % load for load in os.getloadavg())))
    print("%-20s %10s %10s %8s %12s %12s" % ("step", "module", "core", "target", "module CPU", "core CPU"))
    for step, target in TARGETS.items():
        (module, module_cpu), (core, core_cpu) = figures["module"][step], figures["core"][step]
        print("%-20s %10.3f %10.3f %8.1f %12.3f %12.3f" % (step, module, core, target, module_cpu, core_cpu))
    cli, ours = figures["xdp-filter CLI"], figures["xdp_rules"]
    print("\n%d rules: xdp-filter CLI (one process per rule) %.3f s, xdp_rules (one module run) %.3f s"
          % (arguments.cli_rules, cli, ours))
    print("ratio xdp-filter / xdp_rules: %.1f" % (cli / ours))


def measured_inside(script, options, env=None):
    """The last line of what `script --inside options...` printed, as JSON: run in the bench's network namespace
    (made for it, removed after) with a mount namespace of its own, once the firewall is built."""
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "bpf")], check=True)
    make_namespace()
    try:
        done = subprocess.run(["ip", "netns", "exec", NAMESPACE, "unshare", "--mount", sys.executable,
                               os.path.abspath(script), "--inside"] + options,
                              check=True, stdout=subprocess.PIPE, text=True, env=env)
    finally:
        remove_namespace()
    return json.loads(done.stdout.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefixes", type=int, default=100000)
    parser.add_argument("--cli-rules", type=int, default=1000)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.inside:
        return inside(arguments)
    report(measured_inside(__file__, ["--prefixes", str(arguments.prefixes), "--cli-rules", str(arguments.cli_rules)],
                           env=dict(os.environ, LIBXDP_SKIP_DISPATCHER="1")), arguments)


if __name__ == "__main__":
    main()
