# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo's probes, sent from the lab's client namespace to every host at once.

    python demo_probe.py NETNS BLOCKED_SOURCE PORT [--wait-for-http] ADDRESS...

Prints {address: {"ping": answered?, "http": status, "blocked_http": status}} as JSON, where a
status is the HTTP code, or "000" when no answer came. --wait-for-http retries refused connections
for a few seconds (the web servers may still be starting); a dropped request is not retried.
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

__metaclass__ = type


def in_client(netns, argv):
    return subprocess.run(["ip", "netns", "exec", netns] + argv, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, universal_newlines=True, check=False)


def ping_answered(netns, address):
    return in_client(netns, ["ping", "-c", "5", "-i", "0.2", "-W", "1", address]).returncode == 0


def http_status(netns, url, options):
    return in_client(netns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2"] + options
                     + [url]).stdout.strip() or "000"


def probe(args, address):
    url = "http://%s:%d/" % (address, args.port)
    retries = ["--retry", "5", "--retry-connrefused", "--retry-delay", "1"] if args.wait_for_http else []
    return {"ping": ping_answered(args.netns, address),
            "http": http_status(args.netns, url, retries),
            "blocked_http": http_status(args.netns, url, ["--interface", args.blocked_source])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netns")
    parser.add_argument("blocked_source")
    parser.add_argument("port", type=int)
    parser.add_argument("--wait-for-http", action="store_true")
    parser.add_argument("addresses", nargs="+")
    args = parser.parse_args()
    with ThreadPoolExecutor(max_workers=len(args.addresses)) as pool:
        verdicts = dict(zip(args.addresses, pool.map(lambda address: probe(args, address), args.addresses)))
    print(json.dumps(verdicts))


if __name__ == "__main__":
    main()
