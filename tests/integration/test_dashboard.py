"""dashboards/xdpfleet.json against the textfile xdp_stats really writes: every metric, label and label value a
panel or variable uses is in a textfile written on a lab host (a firewall with named, unnamed and rate-limit
rules, a shadow set and traffic), every expression is valid PromQL (promtool), and the JSON has the fields of a
Grafana dashboard. The rule series are stable: no position label, and the rules past the cap summed by action.

A lab of its own (prefix ec, 198.18.180.0/24, 1 host)."""

import json
import re
import subprocess

import jsonschema
import pytest

from tests.helpers.hosts import ad_hoc, ansible_env
from tests.lab import Lab, Layout
from tests.lab.layout import REPO

LAYOUT = Layout("ec", 180)
DASHBOARD = REPO / "dashboards" / "xdpfleet.json"
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
TEXTFILE = "/var/lib/xdpfleet/textfile_collector/xdpfleet.prom"
LIMITED_PORT, DROPPED_PORT = 9997, 9999
RULES = [
    {"name": "no-ping-from-client", "action": "drop", "protocol": "icmp", "source": LAYOUT.client_address + "/32"},
    {"action": "drop", "protocol": "udp", "port": DROPPED_PORT},
    {"name": "udp-flood", "action": "rate_limit", "protocol": "udp", "port": LIMITED_PORT, "pps": 5, "burst": 5,
     "per": "rule"},
    {"name": "ssh", "action": "pass", "protocol": "tcp", "port": 22},
]
SERIES_CAP = 3  # textfile_rules: the fourth rule goes into "(others)"
SCRAPE_LABELS = {"instance", "job"}  # what Prometheus adds when it scrapes node_exporter
GRAFANA_MACROS = {"$__rate_interval": "5m", "$__range": "1h", "$instance": ".*", "$interface": ".*"}
SAMPLE = re.compile(r"^(\w+)\{(.*)\} \S+$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')

TARGET = {"type": "object", "required": ["refId", "expr", "datasource"],
          "properties": {"refId": {"type": "string"}, "expr": {"type": "string", "minLength": 1}}}
PANEL = {"type": "object", "required": ["id", "type", "title", "gridPos", "targets", "datasource"],
         "properties": {"id": {"type": "integer"}, "type": {"type": "string"}, "title": {"type": "string"},
                        "gridPos": {"type": "object", "required": ["x", "y", "w", "h"],
                                    "properties": {key: {"type": "integer", "minimum": 0} for key in "xywh"}},
                        "targets": {"type": "array", "minItems": 1, "items": TARGET}}}
# The fields Grafana's dashboard model needs for an import (its JSON model documentation).
SCHEMA = {"type": "object",
          "required": ["uid", "title", "schemaVersion", "version", "time", "panels", "templating", "editable"],
          "properties": {"uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"}, "title": {"type": "string"},
                         "schemaVersion": {"type": "integer", "minimum": 36}, "version": {"type": "integer"},
                         "time": {"type": "object", "required": ["from", "to"]},
                         "templating": {"type": "object", "required": ["list"],
                                        "properties": {"list": {"type": "array", "items": {
                                            "type": "object", "required": ["name", "type"]}}}},
                         "panels": {"type": "array", "minItems": 1, "items": PANEL}}}


def ansible(host, module, args):
    result = ad_hoc(LAYOUT.inventory, host.name, module, args, env=ansible_env(), timeout=180)
    assert not result.get("failed"), result
    return result


@pytest.fixture(scope="module")
def textfile():
    """The text of the textfile xdp_stats wrote on the lab host after drops, rate-limited packets and a shadow set."""
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    with Lab.running(1, LAYOUT) as lab:
        host = lab.hosts[0]
        host.run("ip link set dev eth0 xdp off; rm -rf /sys/fs/bpf/xdpfleet /etc/xdpfleet " + TEXTFILE)
        try:
            ansible(host, "xdpfleet.xdp.xdp_program", {"interface": "eth0", "object": str(FIREWALL)})
            ansible(host, "xdpfleet.xdp.xdp_rules", {"interface": "eth0", "config": RULES, "state": "overridden"})
            ansible(host, "xdpfleet.xdp.xdp_rules", {"interface": "eth0", "mode": "shadow", "state": "overridden",
                                                     "config": RULES + [{"action": "drop", "protocol": "udp"}]})
            lab.client.run("ping -n -q -c 5 -i 0.01 -W 0.1 %s" % host.address, timeout=30)
            for port in (LIMITED_PORT, DROPPED_PORT):
                sent = lab.client.run("python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                                      "; [s.sendto(b'x', ('%s', %d)) for _ in range(50)]\"" % (host.address, port))
                assert sent.rc == 0, sent
            ansible(host, "xdpfleet.xdp.xdp_stats", {"interfaces": ["eth0"], "textfile": TEXTFILE,
                                                     "textfile_rules": SERIES_CAP})
            checked = host.run("promtool check metrics < %s" % TEXTFILE)
            assert checked.rc == 0, checked
            yield host.run("cat %s" % TEXTFILE).out
        finally:
            host.run("ip link set dev eth0 xdp off; rm -rf /sys/fs/bpf/xdpfleet /etc/xdpfleet " + TEXTFILE)


def exported(text):
    """{metric: [{label: value}]} of the textfile's samples."""
    metrics = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            metrics.setdefault(match.group(1), []).append(dict(LABEL.findall(match.group(2))))
    return metrics


def dashboard():
    return json.loads(DASHBOARD.read_text())


def queries():
    """(where, PromQL, legend) of every panel target and every query variable."""
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            yield "panel %r %s" % (panel["title"], target["refId"]), target["expr"], target.get("legendFormat", "")
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            values = re.fullmatch(r"label_values\((.*), *(\w+)\)", variable["definition"])
            yield "variable %s" % variable["name"], values.group(1), "{{%s}}" % values.group(2)


def problems_of(where, expr, legend, metrics):
    found = []
    names = set(re.findall(r"\bxdpfleet_\w+", expr))
    labels_of = {name: set().union(*map(set, metrics.get(name, []))) | SCRAPE_LABELS for name in names}
    found += ["%s: %s is not exported" % (where, name) for name in names if name not in metrics]
    for name, selector in re.findall(r"\b(xdpfleet_\w+)\{([^}]*)\}", expr):
        for label, operator, value in MATCHER.findall(selector):
            if label not in labels_of[name]:
                found.append("%s: %s has no label %s" % (where, name, label))
            elif label not in SCRAPE_LABELS and "$" not in value and operator in ("=", "=~") and not any(
                    re.fullmatch(value, sample.get(label, "")) for sample in metrics.get(name, [])):
                found.append("%s: no %s sample has %s%s%r" % (where, name, label, operator, value))
    every_label = set().union(*labels_of.values()) if labels_of else SCRAPE_LABELS
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        used |= {label.strip() for label in grouping.split(",")}
    found += ["%s: no metric of it has the label %s" % (where, label) for label in sorted(used - every_label)]
    return found


def test_every_metric_label_and_value_the_dashboard_uses_is_in_the_lab_textfile(textfile):
    metrics = exported(textfile)
    problems = [problem for where, expr, legend in queries() for problem in problems_of(where, expr, legend, metrics)]
    assert problems == [], "\n".join(problems)


def test_every_expression_is_valid_promql(tmp_path):
    rules = tmp_path / "rules.yml"
    expressions = []
    for _where, expr, _legend in queries():
        for macro, value in GRAFANA_MACROS.items():
            expr = expr.replace(macro, value)
        expressions.append(expr)
    rules.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": [
        {"record": "xdpfleet_dashboard:check_%d" % index, "expr": expr} for index, expr in enumerate(expressions)]}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_json_is_a_grafana_dashboard_with_unique_panel_ids_in_the_grid():
    model = dashboard()
    jsonschema.validate(model, SCHEMA)
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24 for panel in model["panels"])
    assert {variable["name"] for variable in model["templating"]["list"]} >= {"datasource", "instance", "interface"}


def test_rule_series_are_known_by_name_or_text_and_the_rest_are_summed(textfile):
    rule_series = exported(textfile)["xdpfleet_rule_hit_packets_total"]
    assert not [labels for labels in rule_series if "position" in labels]
    assert sorted((labels["rule"], labels["action"]) for labels in rule_series) == sorted([
        ("no-ping-from-client", "drop"), ("drop udp from any to any port %d" % DROPPED_PORT, "drop"),
        ("udp-flood", "rate_limit"), ("(others)", "pass")])
    assert 'xdpfleet_rule_hit_packets_total{interface="eth0",rule="no-ping-from-client",action="drop"} 5' in textfile
