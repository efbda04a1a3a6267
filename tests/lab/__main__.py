"""Command line: python -m tests.lab [--prefix xf --subnet 0] up --hosts N | down | status."""

import argparse
import sys
import time

from .fleet import Lab
from .layout import Layout


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    parser.add_argument("--prefix", default=Layout.prefix, help="name prefix of the lab (default %(default)s)")
    parser.add_argument("--subnet", type=int, default=Layout.subnet,
                        help="the lab uses 198.18.<subnet>.0/24 (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="build the lab, or adjust it to --hosts").add_argument(
        "--hosts", type=int, default=3, help="number of hosts (default %(default)s)")
    commands.add_parser("down", help="remove everything the lab made")
    commands.add_parser("status", help="list hosts and whether their sshd answers")
    return parser.parse_args(argv)


def _up(layout: Layout, hosts: int) -> int:
    started = time.monotonic()
    lab = Lab.up(hosts, layout)
    print(f"lab {layout.prefix}: {len(lab.hosts)} hosts up in {time.monotonic() - started:.1f} s, "
          f"inventory {lab.inventory}")
    return 0


def _down(layout: Layout) -> int:
    started = time.monotonic()
    Lab.load(layout).down()
    print(f"lab {layout.prefix}: down in {time.monotonic() - started:.1f} s")
    return 0


def _status(layout: Layout) -> int:
    lab = Lab.load(layout)
    problems = lab.status()
    print(f"lab {layout.prefix}: bridge {layout.bridge} {layout.bridge_address}, "
          f"client {lab.client.address if lab.client else 'absent'}, {len(lab.hosts)} hosts")
    for host in lab.hosts:
        problem = problems[host.name]
        print(f"{host.name:10} {host.address:15} netns={host.netns} pid={host.pid} "
              f"sshd={f'DOWN ({problem})' if problem else 'answers'}")
    return 1 if any(problems.values()) else 0


def main(argv=None) -> int:
    args = _arguments(argv)
    layout = Layout(args.prefix, args.subnet)
    if args.command == "up":
        return _up(layout, args.hosts)
    if args.command == "down":
        return _down(layout)
    return _status(layout)


if __name__ == "__main__":
    sys.exit(main())
