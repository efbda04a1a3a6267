# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The xdp_stats Prometheus textfile: metrics rendered from the xdp facts in the text exposition
format, and written only when its content (or mode) differs, atomically, so that node_exporter's
textfile collector never reads half a file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hostfs
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError


class TextfileError(XdpfleetError):
    pass


# --- rendering --------------------------------------------------------------------------------

def label_value(value):
    """A label value in the exposition format: backslash, double quote and newline escaped."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample(name, labels, value):
    pairs = ",".join('%s="%s"' % (label, label_value(text)) for label, text in labels)
    return "%s{%s} %d" % (name, pairs, value)


def program_samples(metric, name, interface):
    labels = [("interface", name), ("owner", interface["owner"]), ("mode", interface["mode"]),
              ("tag", interface["tag"]), ("object_sha256", interface["object_sha256"])]
    yield sample(metric, labels, 1 if interface["attached"] else 0)


def hook_program_samples(metric, name, interface):
    for program in (interface.get("hook") or {}).get("programs", []):
        labels = [("interface", name), ("position", program["position"]), ("place", program["place"]),
                  ("program", program["name"]), ("owner", program["owner"]), ("tag", program["tag"])]
        yield sample(metric, labels, 1)


def counted_by(interface):
    """The labels of the program whose counters the firewall figures are: its name and place on the hook."""
    program = interface.get("counted_by") or {}
    return [("program", program.get("name")), ("place", program.get("place"))]


def rules_samples(metric, name, interface):
    labels = [("interface", name), ("default_action", interface["default_action"])]
    yield sample(metric, labels, interface["rule_count"])


def set_samples(metric, name, interface):
    for set_name, entries in sorted(interface.get("sets", {}).items()):
        yield sample(metric, [("interface", name), ("set", set_name)], entries)


def verdict_samples(field, rule_set=lambda interface: interface):
    """Samples of a figure of each verdict in the stats of rule_set(interface): the enforced set's, unless told."""
    def samples(metric, name, interface):
        figures = rule_set(interface)
        for verdict, counts in sorted(figures["stats"].items() if figures else ()):
            yield sample(metric, [("interface", name)] + counted_by(interface) + [("verdict", verdict)], counts[field])
    return samples


OTHER_RULES = "(others)"  # the rule label of the rules after the textfile_rules cap, summed by action


def rule_identity(rule):
    """A rule's label: its name, or its text when unnamed; never its position, which moves when rules do."""
    return rule["name"] or rule["rule"]


def rule_hit_samples(field):
    """Samples of every rule's hit counters (rule_counters: the first textfile_rules rules, each by its identity,
    unnamed rules of the same text and action summed; the rest summed by action)."""
    def samples(metric, name, interface):
        counters = interface.get("rule_counters") or {"rules": [], "others": {}}
        summed = {}
        for rule in counters["rules"]:
            key = (rule_identity(rule), rule["action"])
            summed[key] = summed.get(key, 0) + rule[field]
        summed.update(((OTHER_RULES, action), others[field]) for action, others in counters["others"].items())
        for (identity, action), value in sorted(summed.items()):
            yield sample(metric, [("interface", name), ("rule", identity), ("action", action)], value)
    return samples


def _at(value, path):
    """value[path[0]][path[1]]..."""
    for key in path:
        value = value[key]
    return value


def rate_limit_samples(*path):
    """Samples of a figure of each rate-limit rule: rule[path[0]][path[1]]..."""
    def samples(metric, name, interface):
        for rule in interface.get("rate_limits", []):
            yield sample(metric, [("interface", name), ("rule", rule_identity(rule))], _at(rule, path))
    return samples


def shadow_samples(*path):
    """The sample of a figure of the shadow set, shadow[path[0]][path[1]]..., where there is a shadow set."""
    def samples(metric, name, interface):
        if interface.get("shadow"):
            yield sample(metric, [("interface", name)], _at(interface["shadow"], path))
    return samples


def monitor_samples(kind, fields):
    """Samples of the XDP health monitor's counters of one kind, labelled with the fields of each."""
    def samples(metric, name, interface):
        for counter in (interface.get("monitor") or {}).get(kind, []):
            yield sample(metric, [("interface", name)] + [(field, counter[field]) for field in fields],
                         counter["packets"])
    return samples


# (name, type, help, samples(name, interface name, interface facts), firewall interfaces only)
FAMILIES = (
    ("xdpfleet_program_attached", "gauge",
     "Whether an XDP program is attached to the interface (1) or not (0).", program_samples, False),
    ("xdpfleet_hook_program", "gauge",
     "Each program on the interface's XDP hook (1), by position in the order a packet meets them and place: root "
     "(attached to the hook), chained (in the xdpfleet firewall's next-program slot), dispatcher (libxdp's) or "
     "dispatched (run by it).", hook_program_samples, False),
    ("xdpfleet_rules", "gauge",
     "Rules in the active rule set of the xdpfleet firewall.", rules_samples, True),
    ("xdpfleet_set_entries", "gauge",
     "Entries of each address set the rules of the xdpfleet firewall name (after overlaps are dropped).",
     set_samples, True),
    ("xdpfleet_packets_total", "counter",
     "Packets the xdpfleet firewall gave each verdict, summed over all possible CPUs; program and place name the "
     "firewall program that counted them on the hook.",
     verdict_samples("packets"), True),
    ("xdpfleet_bytes_total", "counter",
     "Bytes of the packets the xdpfleet firewall gave each verdict.",
     verdict_samples("bytes"), True),
    ("xdpfleet_rule_hit_packets_total", "counter",
     "Packets matched by each rule, known by its name (unnamed: its text); rules after xdp_stats' textfile_rules "
     "are summed by action as rule=\"(others)\".",
     rule_hit_samples("packets"), True),
    ("xdpfleet_rule_hit_bytes_total", "counter",
     "Bytes of the packets matched by each rule, as xdpfleet_rule_hit_packets_total.",
     rule_hit_samples("bytes"), True),
    ("xdpfleet_rate_limit_passed_packets_total", "counter",
     "Packets each rate-limit rule let on to the rules after it.",
     rate_limit_samples("passed", "packets"), True),
    ("xdpfleet_rate_limit_limited_packets_total", "counter",
     "Packets each rate-limit rule dropped as over its limit.",
     rate_limit_samples("limited", "packets"), True),
    ("xdpfleet_rate_limit_sources", "gauge",
     "Sources (or source prefixes) each rate-limit rule keeps a bucket for now.",
     rate_limit_samples("sources"), True),
    ("xdpfleet_shadow_packets_total", "counter",
     "Packets the shadow set beside the enforced one would have given each verdict (since it was installed).",
     verdict_samples("packets", lambda interface: interface.get("shadow")), True),
    ("xdpfleet_shadow_new_drop_packets_total", "counter",
     "Packets the shadow set would have dropped that the enforced set passed.",
     shadow_samples("new_drops", "packets"), True),
    ("xdpfleet_shadow_new_pass_packets_total", "counter",
     "Packets the shadow set would have passed that the enforced set dropped.",
     shadow_samples("new_passes", "packets"), True),
    ("xdpfleet_xdp_exceptions_total", "counter",
     "Packets whose XDP program aborted (or returned an action the driver cannot carry out), by program and action; "
     "from the XDP health monitor.", monitor_samples("exceptions", ("prog_id", "program", "action")), False),
    ("xdpfleet_xdp_redirect_errors_total", "counter",
     "XDP redirects that failed, by program and error; from the XDP health monitor.",
     monitor_samples("redirect_errors", ("prog_id", "program", "error")), False),
    ("xdpfleet_kernel_drops_total", "counter",
     "Packets the kernel dropped after XDP on an interface that runs an XDP program, by drop reason (skb:kfree_skb); "
     "from the XDP health monitor.", monitor_samples("drops", ("reason",)), False),
)


def render(interfaces):
    """The textfile for {interface name: xdp facts of the interface}, interfaces sorted by name."""
    lines = []
    for metric, kind, help_text, samples, firewall_only in FAMILIES:
        lines += ["# HELP %s %s" % (metric, help_text), "# TYPE %s %s" % (metric, kind)]
        for name, interface in sorted(interfaces.items()):
            if interface["firewall"] or not firewall_only:
                lines.extend(samples(metric, name, interface))
    return "\n".join(lines) + "\n"


# --- options ----------------------------------------------------------------------------------

def file_mode(value):
    """The permission bits of the `mode` option: an octal string ("0644") or an integer (0o644)."""
    if isinstance(value, int) and not isinstance(value, bool):
        bits = value
    else:
        try:
            bits = int(str(value), 8)
        except ValueError:
            raise TextfileError("mode must be an octal number such as '0644', not %r" % (value,))
    if not 0 <= bits <= 0o7777:
        raise TextfileError("mode must be between '0000' and '07777', not %r" % (value,))
    return bits


def check_path(path):
    if not os.path.isabs(path):
        raise TextfileError("textfile must be an absolute path, not %r" % path)
    if not path.endswith(".prom"):
        raise TextfileError("textfile must end in .prom (node_exporter reads only *.prom files), not %r" % path)


# --- the file ---------------------------------------------------------------------------------

def read_textfile(path):
    """The file's text, or None when there is no file."""
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise TextfileError("textfile %s cannot be read: %s" % (path, error))


def _make_directory(directory):
    if not os.path.isdir(directory):
        os.makedirs(directory)
        os.chmod(directory, 0o755)


def update_textfile(path, text, mode, check_mode=False):
    """(changed, text before or None): writes the file when its content differs, fixes its mode when
    only that differs, and in check mode only tells."""
    before = read_textfile(path)
    content_differs = before != text
    mode_differs = not content_differs and os.stat(path).st_mode & 0o7777 != mode
    try:
        if content_differs and not check_mode:
            _make_directory(os.path.dirname(path))
            _hostfs.write_atomically(path, text, mode)
        elif mode_differs and not check_mode:
            os.chmod(path, mode)
    except OSError as error:
        raise TextfileError("textfile %s cannot be written: %s" % (path, error))
    return content_differs or mode_differs, before
