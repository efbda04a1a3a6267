"""xdp_rules on a lab host whose firewall was compiled and loaded by bcc (compiler: bcc): the traffic verdicts
and hit counters of test_xdp_rules, run again on the same lab, plus the bcc backend's own idempotency."""

import pytest

from tests.integration import test_xdp_rules as clang_suite
from tests.integration.test_bcc_facts import SOURCE, bcc_sha256
from tests.integration.test_xdp_rules import ansible, succeeded

# pytest collects fixtures and tests by module attribute: these run again here, on the bcc-compiled firewall.
fleet = clang_suite.fleet
rules_host = clang_suite.rules_host
web_servers = clang_suite.web_servers
test_hit_counters_survive_a_merged_update = clang_suite.test_hit_counters_survive_a_merged_update
test_traffic_verdicts_from_the_client = clang_suite.test_traffic_verdicts_from_the_client


@pytest.fixture
def attach_mode():
    return "native"  # the bcc-loaded firewall as attached; the clang suite covers skb mode


@pytest.fixture(scope="module")
def host(fleet):  # replaces the clang-loaded host of test_xdp_rules
    host = fleet.hosts[0]
    host.run("rm -f /etc/xdpfleet/eth0.json")
    attached = succeeded(ansible(host, "xdp_program", interface="eth0", src=str(SOURCE), compiler="bcc"))
    assert attached["object_sha256"] == bcc_sha256()
    return host


def test_a_second_bcc_run_compiles_and_changes_nothing(host):
    before = succeeded(ansible(host, "xdp_program", interface="eth0", src=str(SOURCE), compiler="bcc"))
    again = succeeded(ansible(host, "xdp_program", interface="eth0", src=str(SOURCE), compiler="bcc"))
    assert again["changed"] is False and again["prog_id"] == before["prog_id"]
    assert again["maps"] == before["maps"]
