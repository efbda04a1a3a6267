"""Nanoseconds per packet of the xdpfleet firewall, xdp-filter and a bare XDP_PASS.

All three run the same frames through BPF_PROG_TEST_RUN (repeat 1,000,000, median
of 5) in one run. With --bcc, the firewall compiled from the same source by bcc (the
xdp_program compiler: bcc backend) runs them too, with the same rules. xdp-filter is loaded by its own CLI (default allow policy, each
rule drops) on a veth in a namespace this script creates and removes, with
LIBXDP_SKIP_DISPATCHER=1 so its own program is the one attached; it is run by id.
Addresses: 198.18.0.0/15 only (IPv6 frames use its IPv4-mapped form).

    .venv/bin/python bench/dataplane.py [--repeat N] [--runs N] [--scale] [--limits] [--shadow] [--chained] [--bcc]
                                        [--breakdown] [--cpu N]

With --limits, a rate limit's cost: UDP over its per-source limit, with 10,000 sources tracked in the limit's
LRU, against UDP dropped by a plain port rule of the same firewall.

With --shadow, a shadow set's cost: the benchmark's rule set alone, and with a shadow set beside it that adds 1%
more /32 sources (what a rollout's shadow phase runs), in two firewalls measured in turns.

With --chained, the cost of hook: chained: the benchmark's rule set with its next-program slot empty, and with
a bare XDP_PASS in the slot (which the firewall tail-calls for every packet it passes), in two firewalls measured
in turns.

With --breakdown, where the nanoseconds go: the same frames through the firewall with rule sets that switch on
one lookup path at a time (nothing but parsing and counting; the port/protocol index; the source host table; a
source trie behind it; the destination host table), and the size of the JIT-compiled program.
"""

import argparse
import contextlib
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, ".collections")]

from pyroute2 import IPRoute, netns  # noqa: E402
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Dot1Q, Ether  # noqa: E402

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_buckets, _fw_model, _fw_slots, _hostfs, _libbpf  # noqa: E402
from ansible_collections.xdpfleet.xdp.plugins.module_utils._hook import PROG_ID, SLOT_KEY  # noqa: E402
from bench.addresses import host_addresses as blocked_sources  # noqa: E402
from tests.helpers import reference  # noqa: E402

FIREWALL = os.path.join(ROOT, "build", "bpf", "xdp_firewall.o")
FIREWALL_SOURCE = os.path.join(ROOT, "bpf", "xdp_firewall.bpf.c")
BARE_PASS = os.path.join(ROOT, "build", "bpf", "xdp_pass.o")
NAMESPACE, VETH, PEER = "xfbench-dp", "xfbench0", "xfbench1"
ADDRESS_RULES, PORTS = 10000, range(8000, 8050)
DESTINATION, ALLOWED_PORT, SOURCES = "198.19.0.1", 443, 16
XDP_DROP, XDP_PASS = 1, 2


def mapped(address):
    return "::ffff:" + address


def frames(blocked):
    """(name, [frame per source], expected verdict) of each packet type. A hash map's cost depends on the
    bucket an address falls in (a random seed per map), so every packet type comes from SOURCES addresses:
    blocked ones (every len(blocked) // SOURCES-th) for the dropped type, addresses no rule names for the
    others."""
    ether = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    dropped = blocked[::max(1, len(blocked) // SOURCES)][:SOURCES]
    allowed = ["198.19.200.%d" % host for host in range(1, SOURCES + 1)]
    return [
        ("IPv4 TCP allowed", [ether / IP(src=source, dst=DESTINATION) / TCP(dport=ALLOWED_PORT)
                              for source in allowed], XDP_PASS),
        ("IPv4 UDP dropped by source", [ether / IP(src=source, dst=DESTINATION) / UDP(dport=ALLOWED_PORT)
                                        for source in dropped], XDP_DROP),
        ("IPv6 TCP allowed", [ether / IPv6(src=mapped(source), dst=mapped(DESTINATION)) / TCP(dport=ALLOWED_PORT)
                              for source in allowed], XDP_PASS),
        ("VLAN IPv4 TCP allowed", [ether / Dot1Q(vlan=7) / IP(src=source, dst=DESTINATION) / TCP(dport=ALLOWED_PORT)
                                   for source in allowed], XDP_PASS),
    ]


def ns_per_packet(prog_fd, packets, expected, repeat, runs):
    """The median over runs of the mean ns per packet over the frames of packets, repeat runs in all."""
    for frame in packets:
        retval = _libbpf.prog_test_run(prog_fd, frame)[0]
        if expected is not None and retval != expected:
            raise SystemExit("verdict %d, expected %d: the benchmark would compare different work" % (retval, expected))
    each = max(1, repeat // len(packets))
    return statistics.median(statistics.mean(_libbpf.prog_test_run(prog_fd, frame, each)[1] for frame in packets)
                             for run in range(runs))


# --- our firewall -------------------------------------------------------------------------

def firewall_rules(address_rules):
    rules = [_fw_model.Rule("drop", ipaddress.ip_network(source), None, None, None)
             for source in blocked_sources(address_rules)]
    return rules + [_fw_model.Rule("drop", None, None, None, (port, port)) for port in PORTS]


def load_ruleset(maps, rules):
    started = time.monotonic()
    _fw_slots.apply_ruleset(maps, reference.compile_rules(rules, "pass"))
    return time.monotonic() - started


# --- xdp-filter ---------------------------------------------------------------------------

def start_xdp_filter(address_rules):
    """Loads xdp-filter on a fresh veth with the same rules; returns its program id."""
    stop_xdp_filter()
    netns.create(NAMESPACE)
    with IPRoute(netns=NAMESPACE) as ipr:
        ipr.link("add", ifname=VETH, kind="veth", peer=PEER)
        for name in (VETH, PEER):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
    # `ip netns exec` remounts /sys: one shell keeps the bpffs that holds xdp-filter's pins.
    script = (
        "set -e; mount -t bpf bpf /sys/fs/bpf; xdp-filter load -m native -p allow %s; "
        "xargs -n1 xdp-filter ip -m src; for port in %s; do xdp-filter port -p tcp,udp -m dst $port; done"
        % (VETH, " ".join(str(port) for port in PORTS)))
    subprocess.run(["ip", "netns", "exec", NAMESPACE, "bash", "-c", script], check=True,
                   input="\n".join(blocked_sources(address_rules)).encode(),
                   env=dict(os.environ, LIBXDP_SKIP_DISPATCHER="1"))
    with IPRoute(netns=NAMESPACE) as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=VETH)[0])[0]
    return link.get_nested("IFLA_XDP", "IFLA_XDP_PROG_ID")


def stop_xdp_filter():
    if NAMESPACE in netns.listnetns():
        netns.remove(NAMESPACE)  # the veth goes with it, and xdp-filter's program with the veth


# --- report ---------------------------------------------------------------------------

def table(names, columns, rows):
    widths = [max(len(names[0]), 26)] + [max(len(column), 10) for column in columns]
    lines = ["  ".join(text.ljust(width) for text, width in zip([names[0]] + columns, widths))]
    for name, values in rows:
        cells = [name] + [value if isinstance(value, str) else "%.1f" % value for value in values]
        lines.append("  ".join(text.ljust(width) for text, width in zip(cells, widths)))
    return "\n".join(lines)


# The bcc build is compiled by the system Python, which has bcc's bindings; the bench reads its pins.
BCC_LOADER = """
import os, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _bcc, _libbpf
with _bcc.BccObject(sys.argv[2], [], lambda name: None) as firewall:
    firewall.load()
    for item in firewall.programs + firewall.maps:
        _libbpf.obj_pin(item.fd, os.path.join(sys.argv[3], item.name))
"""


def bcc_firewall(pin_dir):
    """(program fd, {map name: fd}) of the firewall compiled and loaded by bcc, pinned in pin_dir."""
    subprocess.run(["/usr/bin/python3", "-c", BCC_LOADER, os.path.join(ROOT, ".collections"), FIREWALL_SOURCE,
                    pin_dir], check=True)
    fds = dict((name, _libbpf.obj_get(os.path.join(pin_dir, name))) for name in os.listdir(pin_dir))
    return fds.pop("xdpfleet_fw"), dict((name, fd) for name, fd in fds.items() if name.startswith("xf_"))


def loaded_firewalls(stack, with_bcc):
    """{column: program fd} of the firewall with the benchmark's rules: clang's object, and bcc's build."""
    ours = stack.enter_context(_libbpf.BpfObject(FIREWALL))
    ours.load()
    load_ruleset(reference.map_fds(ours), firewall_rules(ADDRESS_RULES))
    fds = {"ours": ours.program("xdpfleet_fw").fd}
    if with_bcc:
        _hostfs.mount_bpffs()
        pin_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="xfbench-bcc-", dir=_hostfs.BPFFS_ROOT))
        fds["ours (bcc)"], maps = bcc_firewall(pin_dir)
        load_ruleset(maps, firewall_rules(ADDRESS_RULES))
    return fds


def compare(args):
    blocked = blocked_sources(ADDRESS_RULES)
    packets = [(name, [bytes(frame) for frame in frame_list], expected)
               for name, frame_list, expected in frames(blocked)]
    try:
        with contextlib.ExitStack() as stack:
            fds = loaded_firewalls(stack, args.bcc)
            fds["xdp-filter"] = _libbpf.prog_fd_by_id(start_xdp_filter(ADDRESS_RULES))
            bare = stack.enter_context(_libbpf.BpfObject(BARE_PASS))
            bare.load()
            fds["bare pass"] = bare.program("xdpfleet_pass").fd
            rows, results = [], []
            for name, frame, expected in packets:
                ns = dict((column, ns_per_packet(fd, frame, None if column == "bare pass" else expected,
                                                 args.repeat, args.runs)) for column, fd in fds.items())
                ratios = ["%.2f" % (ns["ours"] / ns["xdp-filter"]), "%.2f" % (ns["ours"] / ns["bare pass"])]
                if args.bcc:
                    ratios.append("%.2f" % (ns["ours (bcc)"] / ns["ours"]))
                rows.append((name, list(ns.values()) + ratios))
                results.append(dict(packet=name, **ns))
    finally:
        stop_xdp_filter()
    print("%d /32 drop rules + %d port rules, default pass; ns per packet (median of %d x %d repeats)"
          % (ADDRESS_RULES, len(PORTS), args.runs, args.repeat))
    print(table(["packet"], list(fds) + ["ours/xdpf", "ours/pass"] + ["bcc/clang"] * args.bcc, rows))
    return results


def scale(args):
    """Per-packet cost with 10 rules and with 100,000 rules (two firewalls loaded side by side, measured in
    turns), plus the time to compile and write them. The dropped frames come from the 10 sources both block."""
    packets = [(name, [bytes(frame) for frame in frame_list], verdict)
               for name, frame_list, verdict in frames(blocked_sources(10))]
    with contextlib.ExitStack() as stack:
        loaded = []
        for count in (10, 100000):
            ours = stack.enter_context(_libbpf.BpfObject(FIREWALL))
            ours.load()
            rules = [_fw_model.Rule("drop", ipaddress.ip_network(source), None, None, None)
                     for source in blocked_sources(count)]
            seconds = load_ruleset(reference.map_fds(ours), rules)
            loaded.append(("%d rules (%.2f s to load)" % (count, seconds), ours.program("xdpfleet_fw").fd))
        rows = in_turns(loaded, packets, args)
    print("\nscale: /32 drop rules only; ns per packet (median of %d runs in turns)" % args.runs)
    print(table(["rule set"], [name for name, frame, verdict in packets], rows))
    return rows


def in_turns(loaded, packets, args):
    """[(label, [ns per packet of each packet type])] of the (label, program fd) loaded, each packet type
    measured in every program in turns, run by run: the median of the runs."""
    runs = dict(((label, name), []) for label, fd in loaded for name, frame, verdict in packets)
    for _run in range(args.runs):
        for name, frame, verdict in packets:
            for label, fd in loaded:
                runs[label, name].append(ns_per_packet(fd, frame, verdict, args.repeat, 1))
    return [(label, [statistics.median(runs[label, name]) for name, frame, verdict in packets])
            for label, fd in loaded]


SHADOW_NEW_SOURCES = 100  # the shadow set: the benchmark's rules and 1% more /32 sources, as a rollout adds


def shadow(args):
    """ns per packet of the benchmark's rule set alone and with a shadow set beside it (the same rules and
    SHADOW_NEW_SOURCES more /32 sources), in two firewalls loaded side by side and measured in turns."""
    blocked = blocked_sources(ADDRESS_RULES + SHADOW_NEW_SOURCES)
    packets = [(name, [bytes(frame) for frame in frame_list], verdict)
               for name, frame_list, verdict in frames(blocked[:ADDRESS_RULES])]
    rules = firewall_rules(ADDRESS_RULES)
    shadow_rules = rules + [_fw_model.Rule("drop", ipaddress.ip_network(source), None, None, None)
                            for source in blocked[ADDRESS_RULES:]]
    with contextlib.ExitStack() as stack:
        loaded = []
        for label, shadowed in (("enforced set alone", False), ("with a shadow set", True)):
            ours = stack.enter_context(_libbpf.BpfObject(FIREWALL))
            ours.load()
            maps = reference.map_fds(ours)
            load_ruleset(maps, rules)
            if shadowed:
                counters = list(range(len(rules), len(rules) + len(shadow_rules)))
                _fw_slots.install_shadow(maps, reference.compile_rules(shadow_rules, "pass", counters))
            loaded.append((label, ours.program("xdpfleet_fw").fd))
        rows = in_turns(loaded, packets, args)
    names = [name for name, frame, verdict in packets]
    rows.append(("with / alone", ["%.2f" % (shadowed / alone) for alone, shadowed in zip(rows[0][1], rows[1][1])]))
    print("\nshadow: %d /32 drop rules + %d port rules; the shadow set adds %d sources; ns per packet (median of %d "
          "runs in turns)" % (ADDRESS_RULES, len(PORTS), SHADOW_NEW_SOURCES, args.runs))
    print(table(["rule set"], names, rows))
    return rows


def chained(args):
    """ns per packet of the benchmark's rule set with its next-program slot empty and with a bare XDP_PASS in it,
    in two firewalls loaded side by side and measured in turns."""
    packets = [(name, [bytes(frame) for frame in frame_list], verdict)
               for name, frame_list, verdict in frames(blocked_sources(ADDRESS_RULES))]
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(_libbpf.BpfObject(BARE_PASS))
        bare.load()
        loaded = []
        for label, filled in (("slot empty", False), ("bare XDP_PASS chained", True)):
            ours = stack.enter_context(_libbpf.BpfObject(FIREWALL))
            ours.load()
            load_ruleset(reference.map_fds(ours), firewall_rules(ADDRESS_RULES))
            if filled:
                _libbpf.map_update(ours.map("xf_next").fd, SLOT_KEY, PROG_ID.pack(bare.program("xdpfleet_pass").fd))
            loaded.append((label, ours.program("xdpfleet_fw").fd))
        rows = in_turns(loaded, packets, args)
        bare_ns = [ns_per_packet(bare.program("xdpfleet_pass").fd, frame, None, args.repeat, args.runs)
                   for name, frame, verdict in packets]
    names = [name for name, frame, verdict in packets]
    rows += [("bare XDP_PASS alone", bare_ns),
             ("(chained - empty) / bare", ["%.2f" % ((filled - empty) / alone)
                                           for empty, filled, alone in zip(rows[0][1], rows[1][1], bare_ns)])]
    print("\nchained: %d /32 drop rules + %d port rules; ns per packet (median of %d runs in turns)"
          % (ADDRESS_RULES, len(PORTS), args.runs))
    print(table(["firewall"], names, rows))
    return rows


LIMITED_PORT, DROPPED_PORT, TRACKED_SOURCES = 9000, 9001, 10000
LIMIT_RULES = ({"action": "rate_limit", "protocol": "udp", "port": LIMITED_PORT, "pps": 1, "burst": 1, "per": "source"},
               {"action": "drop", "protocol": "udp", "port": DROPPED_PORT})


def limit_frames(source, port):
    ether = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    ip = IPv6(src=source, dst=mapped(DESTINATION)) if ":" in source else IP(src=source, dst=DESTINATION)
    return bytes(ether / ip / UDP(dport=port))


def limits(args):
    """ns per packet of UDP over its per-source rate limit (TRACKED_SOURCES IPv4 sources tracked; IPv6 sources of
    one /64, the IPv4-mapped addresses of 198.18.0.0/15) and of UDP dropped by a plain port rule,
    in one firewall, measured in turns run by run; each ratio is the median of the runs' ratios."""
    sources = [str(address) for address in ipaddress.ip_network("198.18.0.0/15").hosts()][:TRACKED_SOURCES]
    measured = sources[::len(sources) // SOURCES][:SOURCES]
    ipv6_measured = [mapped(source) for source in measured]  # one /64: a bucket that they share
    kinds = (("UDP over its rate limit (IPv4)", measured, LIMITED_PORT),
             ("UDP over its rate limit (IPv6)", ipv6_measured, LIMITED_PORT),
             ("UDP dropped by port", measured, DROPPED_PORT))
    with _libbpf.BpfObject(FIREWALL) as ours:
        ours.load()
        fd, maps = ours.program("xdpfleet_fw").fd, reference.map_fds(ours)
        load_ruleset(maps, [_fw_model.parse_rule(rule) for rule in LIMIT_RULES])
        for source in sources + ipv6_measured:  # a source's first packet is within its burst and starts its bucket
            _libbpf.prog_test_run(fd, limit_frames(source, LIMITED_PORT))
        tracked = sum(_fw_buckets.tracked(maps).values())
        packets = [[limit_frames(source, port) for source in kind_sources] for _name, kind_sources, port in kinds]
        for frame in packets[0] + packets[1]:  # spends what the buckets refilled (1 packet a second) since they started
            _libbpf.prog_test_run(fd, frame)
        ns_per_packet(fd, packets[0] + packets[1] + packets[2], XDP_DROP, 1, 1)
        # checked once: from here on each bucket lets 1 packet a second through, a few in the millions timed
        runs = [[ns_per_packet(fd, frames_of_kind, None, args.repeat, 1) for frames_of_kind in packets]
                for _run in range(args.runs)]
    rows = [(name, [statistics.median(run[index] for run in runs),
                    "%.2f" % statistics.median(run[index] / run[-1] for run in runs)])
            for index, (name, _sources, _port) in enumerate(kinds)]
    print("\nlimits: %d sources tracked; ns per packet (median of %d runs of %d repeats, the packet types in turns)"
          % (tracked, args.runs, args.repeat))
    print(table(["packet"], ["ns", "/ plain drop"], rows))
    return rows


# (name, rules): each adds one lookup path to the one before (see docs/PERFORMANCE.md, "Where the nanoseconds go")
BREAKDOWN_STEPS = (
    ("no rules: parse, config, stats", lambda blocked: []),
    ("+ 50 port rules: general index", lambda blocked: firewall_rules(0)),
    ("+ 10,000 /32 sources: source host table", lambda blocked: firewall_rules(ADDRESS_RULES)),
    ("+ one /17 source: source trie on a miss", lambda blocked: firewall_rules(ADDRESS_RULES) + [
        _fw_model.Rule("drop", ipaddress.ip_network("198.19.128.0/17"), None, None, None)]),
    ("+ 10 /32 destinations: destination host table", lambda blocked: firewall_rules(ADDRESS_RULES) + [
        _fw_model.Rule("drop", ipaddress.ip_network("198.19.128.0/17"), None, None, None)] + [
        _fw_model.Rule("drop", None, ipaddress.ip_network("198.19.201.%d/32" % host), None, None)
        for host in range(10)]),
)


def breakdown(args):
    """ns per packet of each frame as each lookup path is switched on, and the JIT image size."""
    blocked = blocked_sources(ADDRESS_RULES)
    packets = [(name, [bytes(frame) for frame in frame_list]) for name, frame_list, verdict in frames(blocked)]
    with _libbpf.BpfObject(FIREWALL) as ours:
        ours.load()
        fd, maps = ours.program("xdpfleet_fw").fd, reference.map_fds(ours)
        rows = []
        for label, rules in BREAKDOWN_STEPS:
            load_ruleset(maps, rules(blocked))
            rows.append((label, [ns_per_packet(fd, frame, None, args.repeat, args.runs) for name, frame in packets]))
        info = _libbpf.prog_info(fd)
    with _libbpf.BpfObject(BARE_PASS) as bare:
        bare.load()
        bare_fd = bare.program("xdpfleet_pass").fd
        rows.append(("bare XDP_PASS", [ns_per_packet(bare_fd, frame, None, args.repeat, args.runs)
                                       for name, frame in packets]))
    print("\nbreakdown: ns per packet as each lookup path is switched on (median of %d x %d repeats)"
          % (args.runs, args.repeat))
    print(table(["rule set"], [name for name, frame in packets], rows))
    print("JIT image %d bytes, %d bytes of BPF instructions after verification"
          % (info["jited_prog_len"], info["xlated_prog_len"]))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1000000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", action="store_true", help="also compare 10 with 100,000 rules")
    parser.add_argument("--limits", action="store_true", help="also a rate limit's cost (see the docstring)")
    parser.add_argument("--shadow", action="store_true", help="also the cost of a shadow set (see the docstring)")
    parser.add_argument("--chained", action="store_true", help="also the cost of hook: chained (see the docstring)")
    parser.add_argument("--bcc", action="store_true", help="also the firewall compiled by bcc (16 s to compile)")
    parser.add_argument("--json", help="write the comparison to this file")
    parser.add_argument("--breakdown", action="store_true", help="only where the nanoseconds go (see the docstring)")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                        help="CPU the test runs stay on (default: the last one); unpinned runs vary more")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    if args.breakdown:
        breakdown(args)
        return
    results = compare(args)
    if args.scale:
        scale(args)
    if args.limits:
        limits(args)
    if args.shadow:
        shadow(args)
    if args.chained:
        chained(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
