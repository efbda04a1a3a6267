"""playbooks/gather_stats.yml on the xs lab: fleet table, JSON, CSV, HTML with its chart, Prometheus files."""

import csv
import json
import os
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
    """Runs the playbook once after 30 dropped pings; (report dir, ansible output)."""
    ping(fleet, firewall_host, 30)
    directory = tmp_path_factory.mktemp("stats")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    done = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(LAYOUT.inventory),
                           "playbooks/gather_stats.yml", "-e", "stats_report_dir=%s" % directory],
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
