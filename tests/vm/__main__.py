"""Command line: python -m tests.vm [--prefix xv --subnet 100] build | up --guests N | down | status."""

import argparse
import json
import sys
import time

from tests.lab.layout import Layout

from . import guests, image

DEFAULT_LAYOUT = Layout("xv", 100)


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m tests.vm", description=__doc__)
    parser.add_argument("--prefix", default=DEFAULT_LAYOUT.prefix, help="name prefix of the VM lab (default %(default)s)")
    parser.add_argument("--subnet", type=int, default=DEFAULT_LAYOUT.subnet,
                        help="the guests use 198.18.<subnet>.0/24 (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the guest image unless the cache has it")
    commands.add_parser("up", help="boot the guests, or adjust them to --guests").add_argument(
        "--guests", type=int, default=2, help="number of guests (default %(default)s)")
    commands.add_parser("down", help="stop the guests, remove taps, overlays, bridge and client")
    commands.add_parser("status", help="list guests and whether they answer over SSH")
    return parser.parse_args(argv)


def _build() -> int:
    started = time.monotonic()
    built = image.ensure()
    print(json.dumps({"image": str(built.directory), "seconds": round(time.monotonic() - started, 1),
                      **image.manifest(built)}))
    return 0


def main(argv=None) -> int:
    args = _arguments(argv)
    layout = Layout(args.prefix, args.subnet)
    if args.command == "build":
        return _build()
    if args.command == "up":
        print(json.dumps(guests.up(layout, args.guests)))
        return 0
    if args.command == "down":
        guests.down(layout)
        print(f"vm lab {layout.prefix}: down")
        return 0
    states = guests.status(layout)
    for name, state in states.items():
        print(f"{name:10} {state}")
    return 0 if all(state == "answers" for state in states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
