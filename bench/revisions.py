"""The firewall's cost per packet now against an earlier revision's: bench/dataplane.py of each, in turns.

Both revisions' benches measure their firewall and a bare XDP_PASS in the same run, so each run gives the
firewall's cost as a ratio to bare; runs alternate between the revisions (ABAB...) so that a change of the
machine's speed falls on both. Prints, per packet type, the median ratio of each revision and the quotient
(this revision / the earlier one: 1.05 is 5% slower). The earlier revision is checked out and built in a
temporary git worktree, which is removed afterwards.

    .venv/bin/python bench/revisions.py [--base REV] [--rounds N] [--runs N] [--cpu N]
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEFORE_ISSUE_19 = "2b4a111"  # the last commit before the flood-defence features


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


def ratios_to_bare(checkout, args):
    """{packet type: ns of the firewall / ns of a bare XDP_PASS} from one run of checkout's bench."""
    with tempfile.NamedTemporaryFile(suffix=".json") as output:
        subprocess.run([sys.executable, os.path.join(checkout, "bench", "dataplane.py"), "--runs", str(args.runs),
                        "--cpu", str(args.cpu), "--json", output.name], check=True, stdout=subprocess.DEVNULL)
        results = json.load(output)
    return dict((row["packet"], row["ours"] / row["bare pass"]) for row in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BEFORE_ISSUE_19, help="the earlier revision (default: before issue 19)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each revision, in turns")
    parser.add_argument("--runs", type=int, default=5, help="bench/dataplane.py --runs")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)))
    args = parser.parse_args()
    measured = {"base": [], "now": []}
    with worktree(args.base) as base:
        for _round in range(args.rounds):
            measured["base"].append(ratios_to_bare(base, args))
            measured["now"].append(ratios_to_bare(ROOT, args))
    print("ns per packet / bare XDP_PASS, median of %d runs each, in turns; base %s" % (args.rounds, args.base))
    print("%-28s %10s %10s %10s" % ("packet", "base", "now", "now/base"))
    for packet in measured["base"][0]:
        base, now = (statistics.median(run[packet] for run in measured[which]) for which in ("base", "now"))
        print("%-28s %10.2f %10.2f %10.3f" % (packet, base, now, now / base))


if __name__ == "__main__":
    main()
