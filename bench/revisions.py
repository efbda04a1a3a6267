"""The firewall's cost per packet now against an earlier revision's, copies of both measured in turns.

Each round, one process per revision, running that revision's own code (its bench/dataplane.py's
loaded_firewalls: its compiler, loader and rule set), loads --copies copies of its firewall and pins their
programs in a temporary directory of the bpffs. This process then runs bench/dataplane.py's frames through every
copy of both revisions and a bare XDP_PASS, frame by frame in turns (base, now, base, now, ..., bare), one
BPF_PROG_TEST_RUN of --repeat packets each, after checking each copy's verdict on each frame. Measured this way,
a change of the shared machine's speed (it moves a packet's cost by +-10% over seconds) falls on both revisions;
measured in separate processes one after the other, it did not.

A copy's cost per packet type: the mean of the lowest three quarters of its frames' ns per packet (the machine's
interference only adds time, in bursts), divided by the bare XDP_PASS's. Prints, per packet type: base and now,
the mean over all rounds' copies; now/base (1.05: 5% slower); the lowest and highest now/base of a round (a
round: fresh loads of both revisions, the mean of its copies). The earlier revision is checked out and built in
a temporary git worktree, which is removed afterwards. Other benches share the machine: run it under the lock.

    flock /tmp/xf-bench.lock .venv/bin/python bench/revisions.py [--base REV] [--rounds N] [--copies N]
        [--repeat N] [--cpu N]
"""

import argparse
import contextlib
import importlib
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEFORE_ISSUE_19 = "2b4a111"  # the last commit before the flood-defence features
MODULE_UTILS = "ansible_collections.xdpfleet.xdp.plugins.module_utils"


@contextlib.contextmanager
def worktree(revision):
    """A built checkout of revision, removed on exit."""
    path = tempfile.mkdtemp(prefix="xfbench-rev-")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-f", path, revision], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["make", "-s", "-C", os.path.join(path, "bpf")], check=True)
        yield path
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", path], check=True)


def dataplane_of(checkout):
    """checkout's bench/dataplane.py and its _libbpf (importing the first puts checkout's collection on sys.path)."""
    sys.path.insert(0, checkout)
    return importlib.import_module("bench.dataplane"), importlib.import_module(MODULE_UTILS + "._libbpf")


def pin_copies(checkout, pin_dir, copies):
    """Loads copies of checkout's firewall with checkout's code and pins their programs in pin_dir."""
    dataplane, libbpf = dataplane_of(checkout)
    with contextlib.ExitStack() as stack:
        for copy in range(copies):
            libbpf.obj_pin(dataplane.loaded_firewalls(stack, False)["ours"], os.path.join(pin_dir, str(copy)))


def low_mean(samples):
    return statistics.mean(sorted(samples)[:max(1, len(samples) * 3 // 4)])


def one_round(checkouts, dataplane, libbpf, bare_fd, args):
    """{packet type: {revision: [ns of each copy / ns of bare]}} of fresh copies of each checkout's firewall."""
    hostfs = importlib.import_module(MODULE_UTILS + "._hostfs")
    hostfs.mount_bpffs()
    with tempfile.TemporaryDirectory(prefix="xfbench-rev-", dir=hostfs.BPFFS_ROOT) as pins:
        for which, checkout in checkouts.items():
            os.mkdir(os.path.join(pins, which))
            subprocess.run([sys.executable, os.path.abspath(__file__), "--pin", checkout, os.path.join(pins, which),
                            "--copies", str(args.copies)], check=True)
        programs = [(which, libbpf.obj_get(os.path.join(pins, which, str(copy))))
                    for copy in range(args.copies) for which in checkouts]
    try:
        ratios = {}
        for name, frames, expected in dataplane.frames(dataplane.blocked_sources(dataplane.ADDRESS_RULES)):
            frames = [bytes(frame) for frame in frames]
            if any(libbpf.prog_test_run(fd, frame)[0] != expected for which, fd in programs for frame in frames):
                raise SystemExit("%s: a verdict other than %d, the bench would compare different work" % (name, expected))
            ns = dict((fd, []) for which, fd in programs + [("bare", bare_fd)])
            for frame in frames:
                for fd, samples in ns.items():
                    samples.append(libbpf.prog_test_run(fd, frame, args.repeat)[1])
            bare = low_mean(ns[bare_fd])
            ratios[name] = dict((which, [low_mean(ns[fd]) / bare for each, fd in programs if each == which])
                                for which in checkouts)
        return ratios
    finally:
        for which, fd in programs:
            os.close(fd)


def report(rounds, args):
    print("ns per packet / bare XDP_PASS: %d rounds of %d copies of each revision, in turns; base %s"
          % (args.rounds, args.copies, args.base))
    print("%-28s %7s %7s %9s %15s" % ("packet", "base", "now", "now/base", "rounds min-max"))
    for packet in rounds[0]:
        base, now = (statistics.mean([ratio for each in rounds for ratio in each[packet][which]])
                     for which in ("base", "now"))
        quotients = [statistics.mean(each[packet]["now"]) / statistics.mean(each[packet]["base"]) for each in rounds]
        print("%-28s %7.3f %7.3f %9.3f %7.3f-%-7.3f" % (packet, base, now, now / base, min(quotients), max(quotients)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BEFORE_ISSUE_19, help="the earlier revision (default: before issue 19)")
    parser.add_argument("--rounds", type=int, default=5, help="fresh loads of both revisions, measured in turns")
    parser.add_argument("--copies", type=int, default=6, help="copies of each revision's firewall in a round")
    parser.add_argument("--repeat", type=int, default=100000, help="BPF_PROG_TEST_RUN repeat of each frame")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)))
    parser.add_argument("--pin", nargs=2, metavar=("CHECKOUT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pin:
        pin_copies(*args.pin, copies=args.copies)
        return
    os.sched_setaffinity(0, {args.cpu})
    dataplane, libbpf = dataplane_of(ROOT)
    with worktree(args.base) as base, libbpf.BpfObject(dataplane.BARE_PASS) as bare:
        bare.load()
        checkouts = {"base": base, "now": ROOT}
        rounds = [one_round(checkouts, dataplane, libbpf, bare.program("xdpfleet_pass").fd, args)
                  for _round in range(args.rounds)]
    report(rounds, args)


if __name__ == "__main__":
    main()
