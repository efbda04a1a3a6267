"""Received packets per second of XDP programs under real frames: a bare XDP_DROP (and a bare XDP_PASS for
passed traffic), xdp-filter and the xdpfleet firewall, each with the same /32 source drop rules, in one run.

Topology: network namespaces tb-gen and tb-rx, joined by the veth pair tb-gen0 / tb-rx0 (no IP address on
either end, IPv6 off in both namespaces: no stack sends anything, so the receiver sees only the bench's
frames). Frames: 198.18.150.1 (passed) or a rule's source address (dropped) to 198.18.150.2, UDP, 60 bytes.

Generator: BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (kernel >= 5.18, what xdp-trafficgen does) of a
program returning XDP_TX, run in tb-gen with tb-gen0 as its ingress interface: each frame leaves through
tb-gen0 and arrives at tb-rx0, whose program runs in native mode. The generator's thread is pinned to one CPU;
veth delivers the frames in the softirq that the generator's batch raises, on that same CPU, so the receiver
runs there too (the per-CPU counters of xdp-filter and the firewall show it: column "rx CPU"). Mpps is
therefore what one CPU does generating and receiving, per second of the generator thread's CPU time (the turns
other processes take on that CPU of a shared machine do not count; "on CPU" says how much they took); "rx ns"
is the receiving program's own time per packet.
When the kernel refuses live frames, trafgen (netsniff-ng) sends from tb-gen instead, and the output says so.

Counting: kernel.bpf_stats_enabled (through BPF_ENABLE_STATS, which ends with this process) gives every
receiving program's run_cnt and run_time_ns. Each measurement checks the receiver's verdict on its frame
first, counts what it received against what was sent ("lost"), and gives the median rate of its chunks. Every
case is measured in --rounds rounds, in turns with the other cases (each program is loaded once and attached again
for its turn), so that a drift of the shared machine's speed reaches all of them; a row gives the median of its
rounds' rates and the sum of their counts.

xdp-filter runs as its CLI loads it (LIBXDP_SKIP_DISPATCHER=1, native, default allow policy); its first rule is
added by its CLI and the others copied into its filter_ipv4 map, which holds 10,000 addresses at most. The
firewall is attached and given its rules by the xdp_program and xdp_rules modules. Both are set up by a child
process inside tb-rx, in a private mount namespace with its own bpffs and state directories.

    .venv/bin/python bench/traffic.py [--seconds S] [--rounds N] [--quick] [--smoke] [--monitor] [--cpu N]
                                      [--batch N] [--generator auto|live|trafgen] [--json FILE]

--quick: 0.3 s per measurement, 10,000 rules as the large rule set. --smoke: the firewall with 10 rules only.
--monitor: the firewall with 10 rules without and with the XDP health monitor (build/bpf/xdp_monitor.o, its
tracing programs attached by this process for the turns of "xdpfleet+monitor" only), and the monitor's cost.
The namespaces, programs and pins go when the bench ends, also on an error or Ctrl-C.
"""

import argparse
import contextlib
import errno
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, ".collections")]

from pyroute2 import IPRoute, netns  # noqa: E402

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf  # noqa: E402
from bench.addresses import host_addresses  # noqa: E402

GEN_NS, RX_NS, GEN_IF, RX_IF = "tb-gen", "tb-rx", "tb-gen0", "tb-rx0"
GEN_MAC, RX_MAC = "02:00:c6:12:96:01", "02:00:c6:12:96:02"
SUBNET, PASSED_SOURCE, DESTINATION, PORT = "198.18.150.0/24", "198.18.150.1", "198.18.150.2", 9
FRAME_BYTES = 60
PROGRAMS_SOURCE = os.path.join(ROOT, "bench", "traffic.bpf.c")
FIREWALL = os.path.join(ROOT, "build", "bpf", "xdp_firewall.o")
BARE_PASS = os.path.join(ROOT, "build", "bpf", "xdp_pass.o")
MONITOR = os.path.join(ROOT, "build", "bpf", "xdp_monitor.o")
MONITORED = "xdpfleet+monitor"
STATE_DIRS = ("/etc/xdpfleet", "/var/lib/xdpfleet", "/run/xdpfleet")  # the modules' own; private in the child
VERDICT_MAPS = ("xf_stats", "xdp_stats_map")  # per-CPU {packets, bytes} by XDP action: firewall, xdp-filter
XDP_DROP, XDP_PASS = 1, 2
XDP_FLAGS_DRV_MODE, XDP_ATTACHED_DRV = 1 << 2, 1
LIVE_FRAMES_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, 524)  # 524: ENOTSUPP
RUN_LOCK = "\0xdpfleet-bench-traffic"
CHUNK_SECONDS, CALIBRATION_FRAMES = 0.1, 20000
SMALL_RULES, LARGE_RULES, QUICK_LARGE_RULES = 10, 100000, 10000
DROPPED, PASSED = "dropped", "passed"


def run_stats(prog_fd):
    """(run_cnt, run_time_ns) of a program, counted while BPF stats are enabled."""
    info = _libbpf.prog_info(prog_fd)
    return info["run_cnt"], info["run_time_ns"]


# --- namespaces -------------------------------------------------------------------------------------------------

def in_namespace(name, function, *args, cpu=None):
    """Runs function in a throwaway thread inside network namespace `name` (setns switches only the calling
    thread), pinned to `cpu` when given; processes it starts inherit both."""
    def inside():
        with open("/run/netns/" + name) as namespace:
            os.setns(namespace.fileno(), os.CLONE_NEWNET)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        return function(*args)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(inside).result()


def _quiet_namespace():
    """No IPv6 (router solicitations, MLD reports): nothing but the bench's frames crosses the veth."""
    for scope in ("all", "default"):
        with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % scope, "w") as handle:
            handle.write("1")


def _add_veth():
    with IPRoute() as ipr:
        ipr.link("add", ifname=GEN_IF, kind="veth", address=GEN_MAC,
                 peer={"ifname": RX_IF, "address": RX_MAC, "net_ns_fd": RX_NS})


def _set_up(ifname):
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")


def remove_topology():
    for name in (GEN_NS, RX_NS):
        if name in netns.listnetns():
            netns.remove(name)  # its veth end goes with it, and the XDP programs with the veth


def only_run():
    """A socket whose abstract name only one run can hold at a time (it goes when the process ends, however it
    ends): two runs would share the namespaces, and this one takes them down before its start and at its end."""
    holder, told = socket.socket(socket.AF_UNIX), False
    while True:
        try:
            holder.bind(RUN_LOCK)
            return holder
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
        if not told:
            print("another bench/traffic.py run is under way: waiting for it", file=sys.stderr, flush=True)
            told = True
        time.sleep(1)


def build_topology():
    remove_topology()  # what a killed run left
    for name in (GEN_NS, RX_NS):
        netns.create(name)
        in_namespace(name, _quiet_namespace)
    in_namespace(GEN_NS, _add_veth)
    in_namespace(RX_NS, _set_up, RX_IF)
    in_namespace(GEN_NS, _set_up, GEN_IF)


def ifindex_in(namespace, ifname):
    return in_namespace(namespace, socket.if_nametoindex, ifname)


# --- frames and rules -------------------------------------------------------------------------------------------

def rule_addresses(count):
    return host_addresses(count, avoid=SUBNET)


def frame_from(source):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    packet = Ether(src=GEN_MAC, dst=RX_MAC) / IP(src=source, dst=DESTINATION) / UDP(sport=1024, dport=PORT)
    return bytes(packet) + bytes(FRAME_BYTES - len(packet))


def frame_for(traffic, rules):
    """A dropped frame comes from the middle of the rule set (for a bare program, any source would do)."""
    return frame_from(rule_addresses(rules)[rules // 2] if traffic == DROPPED else PASSED_SOURCE)


# --- generators -------------------------------------------------------------------------------------------------

class LiveFrames:
    """BPF_PROG_RUN with live frames of an XDP_TX program, in chunks: the rate is the median chunk's."""

    def __init__(self, prog_fd, batch):
        self.prog_fd, self.batch = prog_fd, batch
        self.description = "BPF_PROG_RUN live frames (XDP_TX out of %s, batch %d)" % (GEN_IF, batch)

    def refusal(self):
        """None when the kernel takes live frames, else why not (nothing receives this one frame yet)."""
        try:
            in_namespace(GEN_NS, self._send, frame_from(PASSED_SOURCE), 1)
        except _libbpf.LibbpfError as error:
            if error.errno in LIVE_FRAMES_REFUSED:
                return str(error)
            raise
        return None

    def _send(self, frame, count):
        _libbpf.prog_run_live_frames(self.prog_fd, frame, socket.if_nametoindex(GEN_IF), count, self.batch)

    def traffic(self, frame, seconds, received):
        """Runs in tb-gen, pinned; received() is the receiver's count so far. Returns (sent, chunks): the
        chunks' (packets received, wall seconds, CPU seconds of this thread, softirqs that veth ran in it too)."""
        started = time.thread_time()
        self._send(frame, CALIBRATION_FRAMES)
        chunk = max(CALIBRATION_FRAMES, int(CALIBRATION_FRAMES * CHUNK_SECONDS / (time.thread_time() - started)))
        sent, chunks = CALIBRATION_FRAMES, []
        for _chunk in range(max(1, round(seconds / CHUNK_SECONDS))):
            count, wall, cpu = received(), time.perf_counter(), time.thread_time()
            self._send(frame, chunk)
            chunks.append((received() - count, time.perf_counter() - wall, time.thread_time() - cpu))
            sent += chunk
        return sent, chunks


class Trafgen:
    """trafgen from netsniff-ng, one worker, moved to the pinned CPU (it pins its worker to CPU 0 itself);
    the rate is taken after it has started."""

    WARM_UP_SECONDS = 0.3
    OUTGOING = re.compile(r"(\d+) packets outgoing")

    def __init__(self, directory, why):
        self.directory = directory
        self.description = "trafgen (netsniff-ng) on %s, since %s" % (GEN_IF, why)

    def traffic(self, frame, seconds, received):
        config = os.path.join(self.directory, "frame.trafgen")
        with open(config, "w") as handle:
            handle.write("{ %s }\n" % ", ".join("0x%02x" % byte for byte in frame))
        # --no-sock-mem, --notouch-irq: trafgen leaves the machine's settings alone
        process = subprocess.Popen(["trafgen", "--dev", GEN_IF, "--conf", config, "--cpus", "1", "--no-sock-mem",
                                    "--notouch-irq"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        try:
            time.sleep(self.WARM_UP_SECONDS)
            for pid in process_group(process.pid):
                os.sched_setaffinity(pid, os.sched_getaffinity(0))
            count, started = received(), time.perf_counter()
            time.sleep(seconds)
            chunk = (received() - count, time.perf_counter() - started, None)  # its CPU time is not ours to read
        finally:
            os.killpg(process.pid, signal.SIGINT)  # its worker too: it prints its count and ends
            output = process.communicate()[0]
        outgoing = self.OUTGOING.search(output)
        if not outgoing:
            raise SystemExit("trafgen did not say how many packets it sent:\n" + output)
        return int(outgoing.group(1)), [chunk]


def process_group(pgid):
    """Pids of the processes of a process group."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp
            pids.append(int(entry))
    return pids


# --- receivers --------------------------------------------------------------------------------------------------

def attached_program():
    """Id of the program attached to tb-rx0 in native mode (run inside tb-rx)."""
    query = _libbpf.xdp_query(socket.if_nametoindex(RX_IF))
    if query["attach_mode"] != XDP_ATTACHED_DRV:
        raise SystemExit("the receiver's program is not attached in native mode on %s: %s" % (RX_IF, query))
    return query["drv_prog_id"]


def detach_receiver():
    _libbpf.xdp_attach(socket.if_nametoindex(RX_IF), -1, XDP_FLAGS_DRV_MODE)


def attach_loaded(prog_fd):
    in_namespace(RX_NS, lambda: _libbpf.xdp_attach(socket.if_nametoindex(RX_IF), prog_fd, XDP_FLAGS_DRV_MODE))


def set_up_in_child(kind, rules):
    """Runs this file in tb-rx, in a private mount namespace, to load `kind` with `rules` rules; returns the
    number of rules it holds."""
    done = subprocess.run(
        ["ip", "netns", "exec", RX_NS, "unshare", "--mount", "--propagation", "private", sys.executable,
         os.path.abspath(__file__), "--receiver", kind, "--rules", str(rules)],
        check=True, stdout=subprocess.PIPE, text=True, env=dict(os.environ, LIBXDP_SKIP_DISPATCHER="1"))
    return json.loads(done.stdout.splitlines()[-1])["rules"]


def map_by_name(prog_id, names):
    """fd of the first map of the program whose name is in names, or None."""
    prog_fd = _libbpf.prog_fd_by_id(prog_id)
    try:
        for map_id in _libbpf.prog_info(prog_fd)["map_ids"]:
            map_fd = _libbpf.map_fd_by_id(map_id)
            if _libbpf.map_info(map_fd)["name"] in names:
                return map_fd
            os.close(map_fd)
        return None
    finally:
        os.close(prog_fd)


def load_xdp_filter(addresses):
    subprocess.run(["xdp-filter", "load", "--mode", "native", "--policy", "allow", RX_IF], check=True)
    subprocess.run(["xdp-filter", "ip", "--mode", "src", addresses[0]], check=True)
    rules_fd = map_by_name(attached_program(), ("filter_ipv4",))
    taken = addresses[:_libbpf.map_info(rules_fd)["max_entries"]]
    keys = [socket.inet_aton(address) for address in taken]
    value = _libbpf.map_lookup(rules_fd, keys[0], 8 * _libbpf.num_possible_cpus())  # as its CLI wrote it
    _libbpf.map_update_batch(rules_fd, keys[1:], [value] * (len(keys) - 1))
    if len(_libbpf.map_keys(rules_fd, 4)) != len(taken):
        raise SystemExit("xdp-filter's filter_ipv4 does not hold the %d rules written" % len(taken))
    return len(taken)


def load_firewall(addresses):
    from bench.control_plane import run_module
    from ansible_collections.xdpfleet.xdp.plugins.action.xdp_rules import module_args_with_content

    run_module("xdp_program", {"interface": RX_IF, "object": FIREWALL, "mode": "native"})
    config = [{"action": "drop", "source": address + "/32"} for address in addresses]
    run_module("xdp_rules", module_args_with_content({"interface": RX_IF, "state": "overridden", "config": config}))
    return len(addresses)


def receiver_child(kind, rules):
    """The child's whole job: its own bpffs and state directories (gone with its mount namespace), then kind."""
    subprocess.run("mount --make-rprivate / && mount -t bpf bpf /sys/fs/bpf && "
                   + " && ".join("mount -t tmpfs tmpfs " + directory for directory in STATE_DIRS),
                   shell=True, check=True)
    addresses = rule_addresses(rules)
    held = load_xdp_filter(addresses) if kind == "xdp-filter" else load_firewall(addresses)
    print(json.dumps({"rules": held}))


@contextlib.contextmanager
def state_dirs():
    """The modules' state directories exist while the bench runs (the child mounts a tmpfs on each); those
    that did not exist before are removed after."""
    missing = [directory for directory in STATE_DIRS if not os.path.isdir(directory)]
    for directory in missing:
        os.makedirs(directory)
    try:
        yield
    finally:
        for directory in reversed(missing):
            os.rmdir(directory)


# --- measuring --------------------------------------------------------------------------------------------------

def verdict_packets(map_fd):
    """{(cpu, action): packets} of a per-CPU verdict map."""
    cpus = _libbpf.num_possible_cpus()
    counts = {}
    for action in (XDP_DROP, XDP_PASS):
        raw = _libbpf.map_lookup(map_fd, action.to_bytes(4, sys.byteorder), 16 * cpus)
        for cpu in range(cpus):
            counts[cpu, action] = int.from_bytes(raw[16 * cpu:16 * cpu + 8], sys.byteorder)
    return counts


def drained(prog_fd):
    """run_stats once the receiver has stopped counting (frames still queued on the veth are handled)."""
    last = run_stats(prog_fd)
    for _poll in range(50):
        time.sleep(0.02)
        now = run_stats(prog_fd)
        if now == last:
            return now
        last = now
    return last


def measure(generator, cpu, prog_fd, verdict_fd, frame, verdict, seconds):
    got = _libbpf.prog_test_run(prog_fd, frame)[0]
    if got != verdict:
        raise SystemExit("the receiver gives verdict %d, not %d: the bench would compare different work"
                         % (got, verdict))
    (runs, run_ns), verdicts = drained(prog_fd), verdict_fd and verdict_packets(verdict_fd)
    sent, chunks = in_namespace(GEN_NS, generator.traffic, frame, seconds, lambda: run_stats(prog_fd)[0], cpu=cpu)
    runs_after, run_ns_after = drained(prog_fd)
    received = runs_after - runs
    walls = [wall for _packets, wall, _cpu in chunks]
    cpus = [cpu_seconds for _packets, _wall, cpu_seconds in chunks if cpu_seconds is not None]
    rates = [packets / (cpu_seconds or wall) for packets, wall, cpu_seconds in chunks]
    result = {"sent": sent, "received": received, "rx_ns": (run_ns_after - run_ns) / max(received, 1),
              "mpps": statistics.median(rates) / 1e6, "on_cpu": sum(cpus) / sum(walls) if cpus else None,
              "rx_cpus": None}
    if verdict_fd:
        delta = dict((key, count - verdicts[key]) for key, count in verdict_packets(verdict_fd).items())
        result["rx_cpus"] = sorted(set(cpu for (cpu, action), count in delta.items() if count))
        result["verdict_packets"] = sum(count for (cpu, action), count in delta.items() if action == verdict)
    return result


# --- the run ----------------------------------------------------------------------------------------------------

def cases(args):
    """(program, rules, [(traffic, the program's verdict on it)]) to measure, in order."""
    both = [(DROPPED, XDP_DROP), (PASSED, XDP_PASS)]
    if args.smoke:
        return [("xdpfleet", SMALL_RULES, both)]
    if args.monitor:
        return [("xdpfleet", SMALL_RULES, both), (MONITORED, SMALL_RULES, both)]
    large = QUICK_LARGE_RULES if args.quick else LARGE_RULES
    return ([("bare XDP_DROP", None, [(DROPPED, XDP_DROP)]), ("bare XDP_PASS", None, [(PASSED, XDP_PASS)])]
            + [(program, rules, both) for program in ("xdp-filter", "xdpfleet") for rules in (SMALL_RULES, large)])


def load_receiver(stack, program, rules, loaded):
    """(rules it holds, prog fd, verdict map fd or None) of a case's program, loaded once and detached again:
    the fds keep it and its maps, so that the rounds attach it again as it is."""
    if program in loaded:
        attach_loaded(loaded[program])
    else:
        rules = set_up_in_child(program, rules)
    prog_id = in_namespace(RX_NS, attached_program)
    prog_fd = _libbpf.prog_fd_by_id(prog_id)
    stack.callback(os.close, prog_fd)
    verdict_fd = map_by_name(prog_id, VERDICT_MAPS)
    if verdict_fd:
        stack.callback(os.close, verdict_fd)
    in_namespace(RX_NS, detach_receiver)
    return rules, prog_fd, verdict_fd


def combined(results):
    """One row from the rounds' measurements of a case: the median rate, the counts summed."""
    received = sum(result["received"] for result in results)
    on_cpu = [result["on_cpu"] for result in results if result["on_cpu"]]
    row = {"sent": sum(result["sent"] for result in results), "received": received,
           "rx_ns": sum(result["rx_ns"] * result["received"] for result in results) / max(received, 1),
           "mpps": statistics.median(result["mpps"] for result in results),
           "on_cpu": statistics.mean(on_cpu) if on_cpu else None, "rx_cpus": None, "rounds": len(results)}
    if results[0]["rx_cpus"] is not None:
        row["rx_cpus"] = sorted(set(cpu for result in results for cpu in result["rx_cpus"]))
        row["verdict_packets"] = sum(result["verdict_packets"] for result in results)
    return row


def compile_programs(directory):
    arch = os.uname().machine
    path = os.path.join(directory, "traffic.o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
                    "-I/usr/include/%s-linux-gnu" % arch, "-c", PROGRAMS_SOURCE, "-o", path], check=True)
    return path


def generator_for(args, gen_fd, directory):
    live = LiveFrames(gen_fd, args.batch)
    if args.generator == "trafgen":
        return Trafgen(directory, "--generator trafgen")
    reason = live.refusal()
    if reason is None:
        return live
    if args.generator == "live":
        raise SystemExit("live frames refused: %s" % reason)
    return Trafgen(directory, "live frames were refused: %s" % reason)


def run(args, stack, directory):
    stack.callback(only_run().close)
    objects = stack.enter_context(_libbpf.BpfObject(compile_programs(directory)))
    objects.load()
    bare_pass = stack.enter_context(_libbpf.BpfObject(BARE_PASS))
    bare_pass.load()
    loaded = {"bare XDP_DROP": objects.program("bare_drop").fd,
              "bare XDP_PASS": bare_pass.program("xdpfleet_pass").fd}
    stack.callback(os.close, _libbpf.enable_stats())
    stack.enter_context(state_dirs())
    stack.callback(remove_topology)
    build_topology()
    generator = generator_for(args, objects.program("traffic_gen").fd, directory)
    receivers = []
    for program, rules, traffic in cases(args):
        same = [receiver for name, receiver, _traffic in receivers if program == MONITORED and name == "xdpfleet"]
        receivers.append((program, same[0] if same else load_receiver(stack, program, rules, loaded), traffic))
    monitor = stack.enter_context(_libbpf.BpfObject(MONITOR)) if args.monitor else None
    if monitor:
        monitor.load()
    measured = {}
    for _round in range(args.rounds):
        for program, (held, prog_fd, verdict_fd), traffic in receivers:
            attach_loaded(prog_fd)
            links = [each.attach() for each in monitor.programs] if program == MONITORED else []
            try:
                for kind, verdict in traffic:
                    frame = frame_for(kind, held or SMALL_RULES)
                    result = measure(generator, args.cpu, prog_fd, verdict_fd, frame, verdict, args.seconds)
                    measured.setdefault((program, held, kind), []).append(result)
                    print("  %-14s %7s rules  %-7s %6.2f Mpps" % (program, held or "-", kind, result["mpps"]),
                          file=sys.stderr, flush=True)
            finally:
                for link in links:
                    link.close()
                in_namespace(RX_NS, detach_receiver)
    rows = [dict(combined(results), program=program, rules=held, traffic=kind)
            for (program, held, kind), results in measured.items()]
    return generator, rows


def baseline(rows, row, program):
    """The row of `program` for the same traffic with the most rules up to row's, or None."""
    candidates = [other for other in rows if other["program"] == program and other["traffic"] == row["traffic"]
                  and (other["rules"] or 0) <= (row["rules"] or 0)]
    return max(candidates, key=lambda other: other["rules"] or 0) if candidates else None


def ratio(row, base):
    return "%.2f" % (row["mpps"] / base["mpps"]) if base else "-"


def cells(row, rows):
    bare = baseline(rows, row, "bare XDP_DROP" if row["traffic"] == DROPPED else "bare XDP_PASS")
    xdp_filter = row["rules"] and baseline(rows, row, "xdp-filter")
    return [row["program"], "{:,}".format(row["rules"]) if row["rules"] else "-", row["traffic"], "%.2f" % row["mpps"],
            ratio(row, bare), ratio(row, xdp_filter), "%.1f" % row["rx_ns"],
            "%.0f%%" % (100 * row["on_cpu"]) if row["on_cpu"] else "-",
            ",".join(map(str, row["rx_cpus"])) if row["rx_cpus"] else "-",
            "{:,}".format(row["sent"]), "{:,}".format(row["sent"] - row["received"])]


def report(args, generator, rows):
    print("generator: %s, pinned to CPU %d; %.1f s per measurement; load average %s"
          % (generator.description, args.cpu, args.seconds, " ".join("%.1f" % load for load in os.getloadavg())))
    print("receiver: %s in native mode, on the generator's CPU (veth runs it in the generator's softirq)" % RX_IF)
    print("Mpps: packets received per CPU second of the generator's thread, which includes the receiver's work "
          "(trafgen: per wall second), median of %.1f s chunks, then of %d rounds;\non CPU: that thread's CPU time / wall time (the "
          "rest went to other processes); rx ns: the receiving program's run_time_ns / run_cnt (BPF stats on: the "
          "bare programs' figure is the cost of timing);\nrx CPU: where its per-CPU counters counted; lost: sent - "
          "received\n" % (CHUNK_SECONDS, args.rounds))
    header = ["program", "rules", "traffic", "Mpps", "vs bare", "vs xdp-filter", "rx ns", "on CPU", "rx CPU", "sent",
              "lost"]
    lines = [header, ["---"] * len(header)] + [cells(row, rows) for row in rows]
    for line in lines:
        print("| " + " | ".join(line) + " |")
    for row in rows:
        if row["program"] == MONITORED:
            without = baseline(rows, row, "xdpfleet")
            print("\nthe monitor's cost, %s traffic: %.1f%% (%.2f Mpps with it, %.2f without)"
                  % (row["traffic"], 100 * (1 - row["mpps"] / without["mpps"]), row["mpps"], without["mpps"]))
    largest = dict((program, max([row["rules"] for row in rows if row["program"] == program] or [0]))
                   for program in ("xdp-filter", "xdpfleet"))
    if 0 < largest["xdp-filter"] < largest["xdpfleet"]:
        print("\nxdp-filter holds {:,} addresses at most (its filter_ipv4 map): the firewall's {:,} rules are compared"
              " with xdp-filter's {:,}.".format(largest["xdp-filter"], largest["xdpfleet"], largest["xdp-filter"]))


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, help="of traffic per measurement (default 1, --quick 0.3)")
    parser.add_argument("--rounds", type=int,
                        help="measurements of each case, in turns with the others (default 3, --smoke 1)")
    parser.add_argument("--quick", action="store_true", help="0.3 s per measurement, 10,000 rules as the large set")
    parser.add_argument("--smoke", action="store_true", help="only the firewall with 10 rules")
    parser.add_argument("--monitor", action="store_true",
                        help="the firewall with 10 rules without and with the XDP health monitor")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                        help="the CPU of the generator, and so of the receiver (default: the last one)")
    parser.add_argument("--batch", type=int, default=64, help="live frames per batch (at most 256, the veth ring)")
    parser.add_argument("--generator", choices=("auto", "live", "trafgen"), default="auto",
                        help="auto: live frames, trafgen when the kernel refuses them")
    parser.add_argument("--json", help="write the measurements to this file")
    parser.add_argument("--receiver", choices=("xdp-filter", "xdpfleet"), help=argparse.SUPPRESS)
    parser.add_argument("--rules", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 0.3 if args.quick else 1.0
    if args.rounds is None:
        args.rounds = 1 if args.smoke else (7 if args.monitor else 3)
    return args


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    args = parse_arguments()
    if args.receiver:
        return receiver_child(args.receiver, args.rules)
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "bpf")], check=True)
    signal.signal(signal.SIGTERM, interrupted)  # cleaned up as on Ctrl-C
    try:
        with tempfile.TemporaryDirectory(prefix="xfbench-traffic-") as directory, contextlib.ExitStack() as stack:
            generator, rows = run(args, stack, directory)
    except KeyboardInterrupt:
        print("interrupted; the namespaces, programs and pins are gone", file=sys.stderr)
        sys.exit(130)
    except subprocess.CalledProcessError as error:
        command = error.cmd if isinstance(error.cmd, str) else " ".join(error.cmd)
        sys.exit("%s: exit status %d; the namespaces, programs and pins are gone" % (command, error.returncode))
    report(args, generator, rows)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"generator": generator.description, "cpu": args.cpu, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
