"""Nanoseconds per packet that libxdp's dispatcher adds in front of the xdpfleet firewall (hook: dispatcher).

Runs inside a Debian 12 guest of tests/vm (6.1; this machine's kernel loads no extension program): one UDP frame
through BPF_PROG_TEST_RUN, in turns, through
  - a bare XDP_PASS (build/bpf/xdp_pass.o),
  - the firewall loaded alone (as hook: exclusive runs it),
  - the dispatcher holding the firewall (the same maps), attached by libxdp to a veth of the guest,
  - the dispatcher holding the bare XDP_PASS,
each the mean over --runs test runs of --repeat repeats. The guest runs under TCG, so its nanoseconds are inflated:
the added cost is given as a ratio to the bare XDP_PASS of the same run, and converted to this machine's CPU by
a bare XDP_PASS measured here (added ns here = ratio x bare ns here).

    flock /tmp/xf-bench.lock .venv/bin/python bench/dispatcher.py [--prefix xd --subnet 150] [--repeat N] [--runs N]

Its default VM lab is tests/vm/test_dispatcher.py's: do not run both at once (or give another --prefix/--subnet).
"""

import argparse
import json
import os
import statistics
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST_DIR = "/tmp/xdpfleet-bench"
FIREWALL, BARE_PASS = "xdp_firewall.o", "xdp_pass.o"
XDP_PASS = 2


def udp_frame():
    """Ethernet, IPv4 and UDP to port 9000 from 198.18.0.2 to 198.18.0.1, 64 bytes of payload: the firewall with
    no rules passes it."""
    payload = b"x" * 64
    udp = struct.pack("!HHHH", 40000, 9000, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1]))
    checksum = sum(struct.unpack("!10H", header))
    checksum = ~((checksum & 0xFFFF) + (checksum >> 16)) & 0xFFFF
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00" + header + udp


def ns_per_packet(libbpf, prog_fd, frame, repeat):
    retval, duration = libbpf.prog_test_run(prog_fd, frame, repeat)[:2]
    if retval != XDP_PASS:
        raise SystemExit("verdict %d, expected XDP_PASS: the benchmark would compare different work" % retval)
    return duration


# --- inside the guest ----------------------------------------------------------------------

def _veth(name):
    import subprocess
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    subprocess.run(["ip", "link", "set", name + "p", "up"], check=True)
    return int(open("/sys/class/net/%s/ifindex" % name).read())


def _dispatched(libbpf, libxdp, bpf_object, program, ifindex):
    """Attaches program of bpf_object through libxdp on ifindex; returns the dispatcher's fd."""
    with libxdp.Program.from_bpf_object(bpf_object, program) as added:
        added.configure(5, ["pass"])
        added.attach(ifindex, "native")
    with libxdp.Dispatcher.of(ifindex) as dispatcher:
        return libbpf.prog_fd_by_id(dispatcher.main_id)


def _packets_counted(libbpf, stats_fd):
    """The packets the firewall counted (xf_stats: packets and bytes per action, per CPU)."""
    cpus, info = libbpf.num_possible_cpus(), libbpf.map_info(stats_fd)
    total = 0
    for key in range(info["max_entries"]):
        value = libbpf.map_lookup(stats_fd, struct.pack("<I", key), 16 * cpus)
        total += sum(struct.unpack_from("<Q", value, 16 * cpu)[0] for cpu in range(cpus))
    return total


def _check_the_dispatcher_runs_the_firewall(libbpf, stats_fd, dispatcher_fd, frame):
    before = _packets_counted(libbpf, stats_fd)
    ns_per_packet(libbpf, dispatcher_fd, frame, 1)
    if _packets_counted(libbpf, stats_fd) != before + 1:
        raise SystemExit("the dispatcher did not run the firewall: its counters did not count the frame")


def inside(repeat, runs):
    sys.path[:0] = [GUEST_DIR]
    from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
    from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libxdp as libxdp

    frame, fds = udp_frame(), {}
    alone = libbpf.BpfObject(os.path.join(GUEST_DIR, FIREWALL))
    alone.load()
    fds["firewall alone"] = alone.programs[0].fd
    dispatched = libbpf.BpfObject(os.path.join(GUEST_DIR, FIREWALL))
    for bpf_map in dispatched.maps:
        if not bpf_map.is_internal:
            bpf_map.reuse_fd(alone.map(bpf_map.name).fd)
    fds["dispatcher + firewall"] = _dispatched(libbpf, libxdp, dispatched, dispatched.programs[0], _veth("xdb0"))
    bare = libbpf.BpfObject(os.path.join(GUEST_DIR, BARE_PASS))
    bare.load()
    fds["bare XDP_PASS"] = bare.programs[0].fd
    bare_dispatched = libbpf.BpfObject(os.path.join(GUEST_DIR, BARE_PASS))
    fds["dispatcher + XDP_PASS"] = _dispatched(libbpf, libxdp, bare_dispatched, bare_dispatched.programs[0],
                                               _veth("xdb1"))
    _check_the_dispatcher_runs_the_firewall(libbpf, alone.map("xf_stats").fd, fds["dispatcher + firewall"], frame)
    samples = dict((name, []) for name in fds)
    for _run in range(runs):
        for name, fd in fds.items():
            samples[name].append(ns_per_packet(libbpf, fd, frame, repeat))
    # The kernel gives whole nanoseconds per run; the mean over many runs, whose noise spans more than one, resolves
    # less than that.
    print(json.dumps(dict((name, round(statistics.mean(values), 2)) for name, values in samples.items())))


# --- on this machine -------------------------------------------------------------------------

def _copy_tree(sftp, source, target):
    for directory, _dirs, files in os.walk(source):
        relative = os.path.relpath(directory, source)
        remote = target if relative == "." else target + "/" + relative
        try:
            sftp.mkdir(remote)
        except OSError:
            pass
        for name in files:
            if name.endswith(".py"):
                sftp.put(os.path.join(directory, name), remote + "/" + name)


def _bare_here(repeat, runs):
    sys.path[:0] = [ROOT, os.path.join(ROOT, ".collections")]
    from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
    with libbpf.BpfObject(os.path.join(ROOT, "build", "bpf", BARE_PASS)) as bare:
        bare.load()
        return statistics.mean(ns_per_packet(libbpf, bare.programs[0].fd, udp_frame(), repeat) for _run in range(runs))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", default="xd")
    parser.add_argument("--subnet", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=200000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.repeat, args.runs)
        return
    sys.path[:0] = [ROOT]
    import subprocess

    from tests.lab.layout import Layout
    from tests.vm import guests, image
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "bpf")], check=True)
    layout, started = Layout(args.prefix, args.subnet), time.monotonic()
    try:
        guests.up(layout, 1)
        guest, built = guests.Guest(layout, 1), image.current()
        client = guests.connect(guest, built)
        try:
            client.exec_command("mkdir -p " + GUEST_DIR)[1].channel.recv_exit_status()
            sftp = client.open_sftp()
            target = GUEST_DIR + "/ansible_collections/xdpfleet/xdp/plugins"
            for part in ("/ansible_collections", "/ansible_collections/xdpfleet", "/ansible_collections/xdpfleet/xdp",
                         "/ansible_collections/xdpfleet/xdp/plugins"):
                try:
                    sftp.mkdir(GUEST_DIR + part)
                except OSError:
                    pass
            _copy_tree(sftp, os.path.join(ROOT, "plugins", "module_utils"), target + "/module_utils")
            for name in (FIREWALL, BARE_PASS):
                sftp.put(os.path.join(ROOT, "build", "bpf", name), GUEST_DIR + "/" + name)
            sftp.put(os.path.abspath(__file__), GUEST_DIR + "/dispatcher.py")
        finally:
            client.close()
        rc, out, err = guests.run(guest, built, "python3 %s/dispatcher.py --inside --repeat %d --runs %d"
                                  % (GUEST_DIR, args.repeat, args.runs), timeout=1800)
        if rc:
            raise SystemExit("the bench failed in the guest: %s" % err)
        guest_ns = json.loads(out)
    finally:
        guests.down(layout)
    bare_here = _bare_here(args.repeat * 10, args.runs)
    bare = guest_ns["bare XDP_PASS"]
    added = guest_ns["dispatcher + firewall"] - guest_ns["firewall alone"]
    added_bare = guest_ns["dispatcher + XDP_PASS"] - bare
    print(json.dumps({
        "guest_ns": guest_ns, "repeat": args.repeat, "runs": args.runs,
        "added_by_dispatcher": {"guest_ns": round(added, 2), "ratio_to_bare_pass": round(added / bare, 3),
                                "ns_here": round(added / bare * bare_here, 2)},
        "added_by_dispatcher_to_bare_pass": {"guest_ns": round(added_bare, 2), "ratio_to_bare_pass": round(added_bare / bare, 3),
                                             "ns_here": round(added_bare / bare * bare_here, 2)},
        "firewall_alone_ratio_to_bare_pass": round(guest_ns["firewall alone"] / bare, 3),
        "bare_pass_ns_here": round(bare_here, 2), "seconds": round(time.monotonic() - started, 1)}, indent=2))


if __name__ == "__main__":
    main()
