"""playbooks/gather_stats.yml on the xs lab: fleet table, JSON, CSV, HTML with its chart, Prometheus files."""

import csv
import json
import os
import re
import subprocess

import pytest
from PIL import Image

from tests.integration import test_xdp_facts as facts_suite
from tests.integration.test_xdp_facts import LAYOUT, REPO, ping

PROM_PATH = "/var/lib/xdpfleet/textfile_collector/xdpfleet.prom"  # per host: tests/lab/role_settings.yml
DROP_RED = (0xC0, 0x39, 0x2B)

# pytest finds fixtures by module attribute: the facts suite's lab and firewall host, set up again here.
fleet = facts_suite.fleet
firewall_host = facts_suite.firewall_host


@pytest.fixture(scope="module")
def report(fleet, firewall_host, tmp_path_factory):
    """Runs the playbook once after 30 dropped pings, with two samples 1 s apart; (report dir, ansible output)."""
    ping(fleet, firewall_host, 30)
    directory = tmp_path_factory.mktemp("stats")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    done = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(LAYOUT.inventory),
                           "playbooks/gather_stats.yml", "-e", "stats_report_dir=%s" % directory, "-e", "stats_interval=1"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return directory, done.stdout


def rows_by_host(directory):
    return dict((row["host"], row) for row in json.loads((directory / "report.json").read_text())["rows"])


def test_json_and_csv_hold_every_host_with_the_counted_drops(report, fleet):
    directory = report[0]
    rows = rows_by_host(directory)
    assert set(rows) == set(host.name for host in fleet.hosts)
    firewall_row, empty_row = rows[fleet.hosts[0].name], rows[fleet.hosts[1].name]
    assert firewall_row["drop_packets"] >= 30 and firewall_row["top_rules"][0]["name"] == "no-ping-from-client"
    assert firewall_row["top_rules"][0]["packets"] >= 30 and firewall_row["mode"] in ("native", "skb")
    assert empty_row["attached"] is False and empty_row["drop_packets"] == 0
    with open(directory / "report.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["host"] for row in table] == [host.name for host in fleet.hosts]
    assert int(table[0]["drop_packets"]) == firewall_row["drop_packets"]
    assert "no-ping-from-client=%d" % firewall_row["top_rules"][0]["packets"] in table[0]["top_rules"]
    assert firewall_row["sets"] == {"blocklist": 3} and table[0]["sets"] == "blocklist=3" and table[1]["sets"] == ""
    assert table[0]["hook"] == "xdpfleet_fw*" and table[1]["hook"] == ""


def test_every_output_is_timestamped_in_utc_and_gives_rates_and_drops_by_origin(report, fleet):
    directory, output = report
    generated = json.loads((directory / "report.json").read_text())["generated"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", generated)
    with open(directory / "report.csv", newline="") as handle:
        assert {row["generated"] for row in csv.DictReader(handle)} == {generated}
    assert "Generated %s (UTC), rates over 1 s" % generated in output
    assert "Generated %s (UTC)" % generated in (directory / "report.html").read_text()
    row = rows_by_host(directory)[fleet.hosts[0].name]
    assert row["pass_pps"] >= 0 and row["drop_pps"] >= 0
    assert row["rule_drop_packets"] + row["default_action_drop_packets"] + row["malformed_packets"] == row["drop_packets"]
    assert row["rule_drop_packets"] >= 30 and row["default_action_drop_packets"] == 0  # the default action is pass


def test_fleet_table_is_printed_at_the_end(report, fleet):
    directory, output = report
    table_start = output.rindex("HOST ")
    assert "PLAY RECAP" in output[table_start:]
    row = rows_by_host(directory)[fleet.hosts[0].name]
    line = next(line for line in output[table_start:].splitlines() if fleet.hosts[0].name in line)
    assert str(row["drop_packets"]) in line.split() and "no-ping-from-client=" in line


def test_prometheus_textfile_passes_promtool_and_matches_the_facts(report, fleet):
    directory = report[0]
    drops = rows_by_host(directory)[fleet.hosts[0].name]["stats"]["drop"]["packets"]
    for host in fleet.hosts:
        checked = host.run("promtool check metrics < %s" % PROM_PATH)
        assert checked.rc == 0, checked.out + checked.err
    text = fleet.hosts[0].run("cat %s" % PROM_PATH).out
    assert ('xdpfleet_packets_total{interface="eth0",program="xdpfleet_fw",place="root",verdict="drop"} %d\n'
            % drops in text)
    assert 'rule="no-ping-from-client"' in text
    assert [line for line in text.splitlines() if "position=" in line and "xdpfleet_hook_program" not in line] == []


def test_html_report_shows_the_chart_in_headless_chromium(report):
    directory = report[0]
    html = (directory / "report.html").read_text()
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    shot = directory / "report.png"
    subprocess.run(["chromium-headless-shell", "--no-sandbox", "--hide-scrollbars", "--window-size=1000,800",
                    "--screenshot=%s" % shot, (directory / "report.html").as_uri()],
                   capture_output=True, timeout=60, check=True)
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 10, "the screenshot is blank"
    bar_pixels = sum(count for count, color in colors if color == DROP_RED)
    assert bar_pixels > 1000, "no drop bar of the chart in the screenshot"


# A host whose 1,234,567 drops came mostly from outside its listed rule: other rules, the default action and
# malformed packets each get a bar of their colour in the report (roles/stats/templates/report.html.j2).
ORIGIN_COLORS = {"other rules": (0x7F, 0x8C, 0x8D), "default action": (0xD3, 0x54, 0x00),
                 "malformed": (0x8E, 0x44, 0xAD)}
DROPS_BY_ORIGIN = {"host": "edge-1", "interface": "eth0", "mode": "native", "hook": None, "counted_by": None,
                   "rule_count": 12500, "pass_packets": 98765432, "pass_bytes": 123456789012, "pass_pps": 15234.5,
                   "drop_packets": 1234567, "drop_bytes": 74074020, "drop_pps": 321.25, "drop_percent": 1.23,
                   "rule_drop_packets": 234567, "default_action_drop_packets": 600000, "malformed_packets": 400000,
                   "top_rules": [{"position": 7, "name": "no-scanners", "rule": "drop tcp from set scanners to any",
                                  "action": "drop", "packets": 34567, "bytes": 2074020}],
                   "rate_limits": [], "shadow": None}


def test_html_report_draws_drops_by_origin_with_rates_thousands_and_aligned_headers(tmp_path):
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"stats_fleet": [DROPS_BY_ORIGIN], "stats_generated": "2026-12-05T04:00:00Z",
                                     "stats_interval": 10}))
    html_path = tmp_path / "report.html"
    done = subprocess.run([str(REPO / ".venv" / "bin" / "ansible"), "localhost", "-m", "ansible.builtin.template",
                           "-a", "src=%s dest=%s" % (REPO / "roles/stats/templates/report.html.j2", html_path),
                           "-e", "@%s" % variables], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    html = html_path.read_text()
    assert "Generated 2026-12-05T04:00:00Z (UTC)" in html and "rates over 10 s" in html
    for text in ("1,234,567", "98,765,432", "123,456,789,012", "15,234.5/s", "321.2/s", "12,500", "600,000"):
        assert ">%s<" % text in html, text
    header = re.search(r"<tr><th.*?</tr>", html).group(0)
    cells = re.search(r"<tr><td.*?</tr>", html).group(0)
    assert [("text" in th) for th in re.findall(r"<th[^>]*>", header)] == \
        [("text" in td) for td in re.findall(r"<td[^>]*>", cells)]
    shot = tmp_path / "report.png"
    subprocess.run(["chromium-headless-shell", "--no-sandbox", "--hide-scrollbars", "--window-size=1200,800",
                    "--screenshot=%s" % shot, html_path.as_uri()], capture_output=True, timeout=60, check=True)
    colors = dict((color, count) for count, color in Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20))
    drawn = dict((origin, colors.get(color, 0)) for origin, color in ORIGIN_COLORS.items())
    assert min(drawn.values()) > 1000, "a bar of drops by origin is missing from the screenshot: %s" % drawn
