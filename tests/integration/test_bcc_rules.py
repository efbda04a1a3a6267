"""xdp_rules on a lab host whose firewall was compiled and loaded by bcc (compiler: bcc): the traffic verdicts
and hit counters of test_xdp_rules, run again on the same lab, plus the bcc backend's own idempotency."""

import pytest

from tests.integration.test_xdp_rules import (  # noqa: F401 (fixtures and tests run again here)
    REPO, ansible, fleet, rules_host, succeeded, test_hit_counters_survive_a_merged_update,
    test_traffic_verdicts_from_the_client, web_servers)
from tests.integration.test_bcc_facts import SOURCE, bcc_sha256


@pytest.fixture(scope="module")
def host(fleet):  # noqa: F811 (replaces the clang-loaded host of test_xdp_rules)
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
