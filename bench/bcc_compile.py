"""Seconds to compile, load and attach the firewall: bcc on the host against clang on the controller and
libbpf on the host, each through one `ansible` ad-hoc run of xdp_program, as an operator would run it.

A 1-host lab of its own (prefix bq, 198.18.175.0/24). Each round, from a detached host:
- bcc: `compiler: bcc` with the source (compiled and loaded on the host), then the same again (no change);
- clang: the source with the controller's compile cache emptied (clang on the controller, libbpf on the
  host), then the same again (cache hit, no change);
- the anchor: `state: detached` on a detached host, the cost of an ad-hoc run that does nothing.
Prints the median and range of --rounds rounds, and each first attach less the anchor.

    .venv/bin/python bench/bcc_compile.py [--rounds 3] [--keep]
"""

import argparse
import os
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".collections")]

from tests.helpers.hosts import ad_hoc  # noqa: E402
from tests.lab import Lab, Layout  # noqa: E402

LAYOUT = Layout("bq", 175)
SOURCE = ROOT / "bpf" / "xdp_firewall.bpf.c"
CONTROLLER_CACHE = Path(os.path.expanduser("~/.cache/xdpfleet"))  # the action plugin's CACHE_DIR
DETACHED = {"interface": "eth0", "state": "detached"}
STEPS = (("bcc, compile + load", {"src": str(SOURCE), "compiler": "bcc"}),
         ("bcc, again (no change)", {"src": str(SOURCE), "compiler": "bcc"}),
         ("detach", DETACHED),
         ("clang, compile + load", {"src": str(SOURCE)}),
         ("clang, again (no change)", {"src": str(SOURCE)}),
         ("detach", DETACHED),
         ("anchor: detached, no change", DETACHED))


def timed_run(lab, args):
    started = time.monotonic()
    result = ad_hoc(lab.inventory, lab.hosts[0].name, "xdpfleet.xdp.xdp_program", dict({"interface": "eth0"}, **args))
    if result["failed"]:
        raise SystemExit("xdp_program %s failed: %s" % (args, result.get("msg")))
    return time.monotonic() - started


def one_round(lab, seconds):
    timed_run(lab, DETACHED)
    for label, args in STEPS:
        if label.startswith("clang, compile"):
            shutil.rmtree(CONTROLLER_CACHE, ignore_errors=True)
        seconds[label].append(timed_run(lab, args))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()
    lab = Lab.up(1, LAYOUT)
    seconds = defaultdict(list)
    try:
        for attempt in range(args.rounds):
            one_round(lab, seconds)
    finally:
        if not args.keep:
            lab.down()
    print("xdp_program through `ansible` ad-hoc, %d rounds (seconds; load average %s, %d CPUs)"
          % (args.rounds, " ".join("%.2f" % load for load in os.getloadavg()), len(os.sched_getaffinity(0))))
    print("%-30s %8s %8s %8s" % ("", "median", "min", "max"))
    for label, values in seconds.items():
        if label != "detach":
            print("%-30s %8.2f %8.2f %8.2f" % (label, statistics.median(values), min(values), max(values)))
    anchor = statistics.median(seconds["anchor: detached, no change"])
    for backend in ("bcc", "clang"):
        print("%s: compile + load + attach less the anchor: %.2f s"
              % (backend, statistics.median(seconds["%s, compile + load" % backend]) - anchor))


if __name__ == "__main__":
    main()
