# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tracing program types bpf_program attaches, known by their libbpf section prefix, and what each needs
from the kernel: the programs of an object to load, or a refusal that names the missing feature and the
alternative before anything is loaded.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import listed
from ansible_collections.xdpfleet.xdp.plugins.module_utils._object_load import ProgramError

# libbpf section prefix -> kind (libbpf's aliases map to one kind).
KINDS = {"tracepoint": "tracepoint", "tp": "tracepoint", "raw_tp": "raw_tp", "raw_tracepoint": "raw_tp",
         "tp_btf": "tp_btf", "fentry": "fentry", "fexit": "fexit", "kprobe": "kprobe", "kretprobe": "kretprobe"}
PROBES = ("kprobe", "kretprobe")
TRAMPOLINED = ("fentry", "fexit")
KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"  # present when the kernel has CONFIG_KPROBES
ALTERNATIVES = "a tracepoint/ or tp_btf/ program on a tracepoint near the function"
LINK_TYPES = {1: "raw_tracepoint", 2: "tracing", 7: "perf_event", 8: "kprobe_multi"}


def kind_of(section):
    """The kind of a program's section (tracepoint/xdp/xdp_exception: tracepoint), None for other programs."""
    return KINDS.get(section.split("/", 1)[0])


def select(bpf_object, names):
    """The programs to attach: those named (every one must be a tracing program), else every tracing program."""
    tracing = dict((program.name, program) for program in bpf_object.programs if kind_of(program.section))
    if not names:
        if not tracing:
            raise ProgramError("object %s has no tracing program (sections %s/...)"
                               % (bpf_object.path, "/..., ".join(sorted(KINDS))))
        return [tracing[name] for name in sorted(tracing)]
    wrong = ["programs: %s is not a tracing program of %s; name one of %s" % (
        name, bpf_object.path, ", ".join(sorted(tracing)) or "none") for name in names if name not in tracing]
    if wrong:
        raise ProgramError(listed(wrong))
    return [tracing[name] for name in sorted(set(names))]


def check_kernel_features(programs, has_kprobes=None):
    """Refuses, before anything is loaded, programs whose kind this kernel lacks (kprobes)."""
    if has_kprobes is None:
        has_kprobes = os.path.isdir(KPROBE_PMU)
    probes = [program for program in programs if kind_of(program.section) in PROBES]
    if probes and not has_kprobes:
        raise ProgramError(
            "this kernel has no kprobes (built without CONFIG_KPROBES: %s is missing), so it cannot run %s; use "
            "%s, or fentry/fexit where the kernel allows BPF trampolines"
            % (KPROBE_PMU, ", ".join("%s (section %s)" % (p.name, p.section) for p in probes), ALTERNATIVES))


def refusal(error, programs):
    """The plain reason for a load the kernel refused with EPERM because of trampoline programs, or None."""
    trampolined = [program for program in programs if kind_of(program.section) in TRAMPOLINED]
    if error.errno != errno.EPERM or not trampolined:
        return None
    return ("the kernel refuses programs that attach through a BPF trampoline (fentry/fexit: EPERM at load, with "
            "an empty verifier log; a lockdown or a kernel policy forbids them here), so it cannot run %s; use %s"
            % (", ".join("%s (section %s)" % (p.name, p.section) for p in trampolined), ALTERNATIVES))


def link_type_name(number):
    return LINK_TYPES.get(number, str(number))
