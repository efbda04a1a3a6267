# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shadow rule sets (xdp_rules mode: shadow): the maps in which the program counts what a shadow set would have
done, and those counts as facts. The shadow set lives in the rule-set slot the enforced set does not use (see
_fw_slots.install_shadow); its desired state is kept beside the enforced one (_fw_store.shadow_path)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors, _libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_kernel import PerCpuRecords
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import (
    REASONS, SHADOW_NEW_DROPS, SHADOW_NEW_PASSES)

SHADOW_MAPS = ("xf_shadow_stats", "xf_shadow_hits")  # absent from bcc builds and objects before shadow sets


class ShadowError(_errors.XdpfleetError):
    pass


@contextlib.contextmanager
def pinned_shadow_maps(pin_dir, interface):
    """{map name: fd} of the shadow maps pinned in pin_dir, closed on exit."""
    missing = [name for name in SHADOW_MAPS if not os.path.exists(os.path.join(pin_dir, name))]
    if missing:
        raise ShadowError("the firewall on %s has no %s: its object predates shadow sets or was built with bcc, "
                          "which cannot verify a second classification; attach the current object with "
                          "xdpfleet.xdp.xdp_program (compiler: clang) to use mode: shadow"
                          % (interface, " or ".join(missing)))
    fds = {}
    try:
        for name in SHADOW_MAPS:
            fds[name] = _libbpf.obj_get(os.path.join(pin_dir, name))
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def _percent(part, whole):
    return round(100.0 * part / whole, 3) if whole else 0.0


def shadow_counts(stats_fd):
    """What the shadow set did with the packets it classified: {packets, bytes} by reason (as the enforced
    stats), the packets in all, would_drop (drops and malformed), new_drops (it would drop, the enforced set
    passed), new_passes (the reverse), and the percentages of the packets classified of those three."""
    records = PerCpuRecords(stats_fd, SHADOW_NEW_PASSES + 1)
    stats = {}
    for index, reason in enumerate(REASONS):
        packets, bytes_ = records.summed(index)
        stats[reason] = {"packets": packets, "bytes": bytes_}
    classified = sum(counts["packets"] for counts in stats.values())
    would_drop = stats["drop"]["packets"] + stats["malformed"]["packets"]
    counts = {"stats": stats, "packets": classified, "would_drop": would_drop}
    for name, index in (("new_drops", SHADOW_NEW_DROPS), ("new_passes", SHADOW_NEW_PASSES)):
        packets, bytes_ = records.summed(index)
        counts[name] = {"packets": packets, "bytes": bytes_}
    counts["would_drop_percent"] = _percent(would_drop, classified)
    counts["new_drops_percent"] = _percent(counts["new_drops"]["packets"], classified)
    counts["new_passes_percent"] = _percent(counts["new_passes"]["packets"], classified)
    return counts
