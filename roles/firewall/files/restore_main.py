"""__main__ of xdpfleet-restore.pyz (packed by build.py), as xdpfleet-restore.service runs it at boot.

Restores every recorded interface and says how each went; exits 1 when any of them failed.
"""

import sys

from ansible_collections.xdpfleet.xdp.plugins.module_utils._restore import restore_all


def main():
    failed = 0
    for restored, report in restore_all():
        print("xdpfleet-restore: %s" % report, file=sys.stdout if restored else sys.stderr)
        failed += not restored
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
