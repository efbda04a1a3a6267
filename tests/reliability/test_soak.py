"""Soak: rule sets replaced one after another for XDPFLEET_SOAK_SECONDS (120 in make test, 300 by
`make soak`) while UDP probes flow from the client. Every set, generated at random, passes PROBE_PASS
and drops PROBE_DROP from the client through other rules in other positions; so any probe packet with
another verdict was misclassified."""

import json
import os
import time

from tests.helpers.hosts import on_host
from tests.helpers.traffic import Stream
from tests.reliability.common import BASE_RULES, LAYOUT, SSH_PASS

SECONDS = float(os.environ.get("XDPFLEET_SOAK_SECONDS", "120"))
PROBE_PASS, PROBE_DROP = 5101, 5102
CLIENT = LAYOUT.client_address

UPDATER = """
import json, random, sys, time
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_run
ssh_pass, client, host, seconds = json.loads(sys.argv[1])
PASS, DROP = %d, %d
random.seed(2544)

def noise():
    # never matches a probe: the client is 198.18.x.2, noise sources are in 198.19.0.0/16
    rule = {"action": random.choice(["drop", "pass"]),
            "source": "198.19.%%d.0/%%d" %% (random.randrange(256), random.choice([24, 28, 32]))}
    if random.random() < 0.6:
        rule["protocol"] = random.choice(["tcp", "udp"])
        low = random.randrange(1, 60000)
        rule["port"] = "%%d-%%d" %% (low, low + random.randrange(100)) if random.random() < 0.5 else low
    return rule

PASSES = [{"action": "pass", "source": client + "/32", "protocol": "udp", "port": PASS},
          {"action": "pass", "protocol": "udp", "port": "%%d-%%d" %% (PASS - 1, PASS)},
          {"action": "pass", "destination": host + "/32", "protocol": "udp", "port": PASS}]
DROPS = [{"action": "drop", "source": client + "/32", "protocol": "udp", "port": DROP},
         {"action": "drop", "protocol": "udp", "port": "%%d-%%d" %% (DROP, DROP + 50)},
         {"action": "drop", "source": client.rsplit(".", 1)[0] + ".0/24", "protocol": "udp"}]

def rule_set():
    # a pass rule for PASS comes before every drop rule that would also match it
    default = random.choice(["pass", "drop"])
    noise_rules = [dict(noise(), name="noise-%%d" %% index) for index in range(random.randrange(0, 400))]
    cut = random.randrange(len(noise_rules) + 1)
    probes = [random.choice(PASSES)] + ([random.choice(DROPS)] if default == "pass" or random.random() < 0.5 else [])
    return [ssh_pass] + noise_rules[:cut] + probes + noise_rules[cut:], default

updates, ends = 0, time.time() + seconds
while time.time() < ends:
    config, default = rule_set()
    _fw_run.run({"interface": "eth0", "state": "overridden", "config": config, "default_action": default})
    updates += 1
print(updates)
""" % (PROBE_PASS, PROBE_DROP)


def apply(host, rules):
    on_host(host, """
        from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_run
        _fw_run.run({"interface": "eth0", "state": "overridden", "config": %r, "default_action": "pass"})
    """ % rules)


def test_soak_no_probe_misclassified_while_rules_change(deployed, tmp_path):
    host = deployed.hosts[0]
    apply(host, [SSH_PASS, {"action": "drop", "source": CLIENT + "/32", "protocol": "udp", "port": PROBE_DROP}])
    stream = Stream(deployed, host, [PROBE_PASS, PROBE_DROP], tmp_path / "stop", pause=0.005)
    started = time.monotonic()
    try:
        arguments = json.dumps([SSH_PASS, CLIENT, host.address, SECONDS])
        updates = int(on_host(host, "import sys; sys.argv[1:] = [%r]\n" % arguments + UPDATER,
                              timeout=SECONDS + 600))
    finally:
        sent, (passed, dropped) = stream.stop()
        apply(host, BASE_RULES)
    elapsed = time.monotonic() - started
    print("soak %.0f s: %d rule-set updates, %d probe pairs sent, %d passed, %d dropped"
          % (elapsed, updates, sent, passed, dropped))
    assert updates > SECONDS / 10, "too few updates to call it a soak"
    assert sent > 10 * SECONDS, "the probe stream was too thin"
    assert (passed, dropped) == (sent, 0), "misclassified: %d of %d pass probes lost, %d drop probes passed" % (
        sent - passed, sent, dropped)
