"""xdp_stats on the xs lab hosts (see test_xdp_facts): the facts it returns, the Prometheus textfile it writes
(promtool, changed only on a difference, check mode, diff mode) and its refusal of bad input."""

import pytest

from tests.helpers.hosts import run_module
from tests.integration import test_xdp_facts as facts_suite
from tests.integration.test_xdp_facts import ping

DIRECTORY = "/var/lib/xdpfleet/test-xdp-stats"
TEXTFILE = DIRECTORY + "/xdpfleet.prom"

# pytest finds fixtures by module attribute: the facts suite's lab and firewall host, set up again here.
fleet = facts_suite.fleet
firewall_host = facts_suite.firewall_host


def stats(host, check=False, **args):
    result = run_module(host, "xdp_stats", dict(dict(interfaces=["eth0"], textfile=TEXTFILE), **args), check=check)
    assert not result.get("failed"), result
    return result


def textfile(host):
    shown = host.run("cat %s" % TEXTFILE)
    return shown.out if shown.rc == 0 else None


def drop_sample(text):
    return int(next(line for line in text.splitlines()
                    if line.startswith('xdpfleet_packets_total{interface="eth0",program="xdpfleet_fw",place="root",'
                                       'verdict="drop"}')).split()[-1])


@pytest.fixture
def no_textfile(fleet):
    for host in fleet.hosts:
        host.run("rm -rf %s" % DIRECTORY)


def test_host_with_nothing_attached_writes_once_then_is_unchanged(fleet, no_textfile):
    host = fleet.hosts[1]
    first = stats(host)
    assert first["changed"] is True and first["textfile"] == TEXTFILE
    assert first["stats"]["interfaces"]["eth0"]["attached"] is False
    assert first["ansible_facts"]["xdp"] == first["stats"]
    assert host.run("stat -c %%a %s %s" % (DIRECTORY, TEXTFILE)).out.split() == ["755", "644"]
    checked = host.run("promtool check metrics < %s" % TEXTFILE)
    assert checked.rc == 0, checked.out + checked.err
    assert 'xdpfleet_program_attached{interface="eth0",owner="",mode="",tag="",object_sha256=""} 0' in textfile(host)
    assert stats(host)["changed"] is False


def test_firewall_counters_reach_the_textfile_and_check_mode_writes_nothing(fleet, firewall_host, no_textfile):  # noqa: E501
    predicted = stats(firewall_host, check=True, _ansible_diff=True)
    assert predicted["changed"] is True and textfile(firewall_host) is None
    assert predicted["diff"]["before"] == "" and "xdpfleet_rules{" in predicted["diff"]["after"]
    written = stats(firewall_host)
    text = textfile(firewall_host)
    drops = written["stats"]["interfaces"]["eth0"]["stats"]["drop"]["packets"]
    assert written["changed"] is True and drop_sample(text) == drops
    assert 'rule="no-ping-from-client",action="drop"' in text
    assert "rule_counters" not in written["stats"]["interfaces"]["eth0"]  # the textfile's, not returned
    checked = firewall_host.run("promtool check metrics < %s" % TEXTFILE)
    assert checked.rc == 0, checked.out + checked.err

    ping(fleet, firewall_host, 12)
    predicted = stats(firewall_host, check=True, _ansible_diff=True)
    assert predicted["changed"] is True and textfile(firewall_host) == text
    assert predicted["diff"]["before"] == text and drop_sample(predicted["diff"]["after"]) == drops + 12
    assert stats(firewall_host)["changed"] is True and drop_sample(textfile(firewall_host)) == drops + 12


def test_without_textfile_it_only_gathers(fleet, no_textfile):
    result = run_module(fleet.hosts[1], "xdp_stats", {"interfaces": ["eth0"]})
    assert result["changed"] is False and result["textfile"] is None and "eth0" in result["stats"]["interfaces"]
    assert fleet.hosts[1].run("test -e %s" % DIRECTORY).rc != 0


@pytest.mark.parametrize("args, message", [
    ({"mode": "rw-r--r--"}, "mode must be an octal number"),
    ({"textfile": "xdpfleet.prom"}, "textfile must be an absolute path"),
    ({"top_rules": -1}, "top_rules must be 0 or more"),
    ({"textfile_rules": -1}, "textfile_rules must be 0 or more"),
    ({"interfaces": ["no-such-if0"]}, "no-such-if0"),
])
def test_bad_input_fails_naming_the_field(fleet, no_textfile, args, message):
    result = run_module(fleet.hosts[1], "xdp_stats", dict(dict(interfaces=["eth0"], textfile=TEXTFILE), **args))
    assert result.get("failed") and message in result["msg"], result
    assert fleet.hosts[1].run("test -e %s" % DIRECTORY).rc != 0
