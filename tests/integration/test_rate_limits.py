"""Rate limits under real traffic: UDP from the lab's client namespace to a host running the firewall, counted
by the firewall's own counters and by a receiver on the host.

A lab of its own (prefix rtl, 198.18.110.0/24). The client sends from addresses of its own, one or two per
case, and each case has a rate limit on its own sources, so the four cases run at the same time without
sharing a bucket. Two sender processes, pinned to CPU 0 and CPU 1, share every source's traffic: veth runs
the receiving XDP program in the sender's softirq, so each source's packets are judged on both CPUs.
`pytest -s` shows the measured figures.
"""

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.hosts import PYTHON, on_host, run_module
from tests.lab import Lab, Layout

REPO = Path(__file__).resolve().parents[2]
LAYOUT = Layout("rtl", 110)
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
PORT = 5001
LIMIT = 500  # pps
BURST = LIMIT // 10  # the default burst
SECONDS = 10
CPUS = (0, 1)
TOLERANCE = 0.10
LEAST_OVERLOAD = 8  # an over-limit source must reach 8 times the limit: below that, nothing much was limited

ONE = LAYOUT.address(201)
PER_SOURCE = (LAYOUT.address(202), LAYOUT.address(203))
PER_RULE = (LAYOUT.address(204), LAYOUT.address(205))
UNDER = LAYOUT.address(206)
CASES = [(ONE,), PER_SOURCE, PER_RULE, (UNDER,)]  # the sources of each rule below
SENDS = {ONE: 10 * LIMIT, PER_SOURCE[0]: 10 * LIMIT, PER_SOURCE[1]: 10 * LIMIT,
         PER_RULE[0]: 5 * LIMIT, PER_RULE[1]: 5 * LIMIT, UNDER: LIMIT // 2}  # pps per source, over both CPUs


def limit(name, source, **settings):
    return dict({"name": name, "action": "rate_limit", "source": source, "protocol": "udp", "port": PORT,
                 "pps": LIMIT}, **settings)


RULES = [limit("one", ONE + "/32"), limit("per-source", PER_SOURCE[0] + "/31"),
         limit("per-rule", PER_RULE[0] + "/31", per="rule"), limit("under", UNDER + "/32")]

SENDER = """
import json, os, socket, sys, time
cpu, destination, port, start_at, seconds, flows = sys.argv[1:]
os.sched_setaffinity(0, {int(cpu)})
flows = json.loads(flows)
sockets = {}
for source in flows:
    sockets[source] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sockets[source].bind((source, 0))
target, payload = (destination, int(port)), b"x" * 32
sent, first, last, credit = dict.fromkeys(flows, 0), {}, {}, dict.fromkeys(flows, 0.0)
order = list(flows)
start_at = float(start_at)
end_at = start_at + float(seconds)
time.sleep(max(0.0, start_at - time.time()))
before = time.time()
while True:
    now = time.time()
    if now >= end_at:
        break
    elapsed, before = min(now - before, 0.01), now  # after a stall, no catching up in one long burst
    for source, rate in flows.items():
        credit[source] += rate * elapsed
    order = order[1:] + order[:1]  # no source always first to the tokens a shared bucket gained
    due = [source for source in order if credit[source] >= 1]
    while due:  # one datagram of each source in turn, as sources sending at once would arrive
        for source in due:
            sockets[source].sendto(payload, target)
            credit[source] -= 1
            sent[source] += 1
            last[source] = time.time()
            first.setdefault(source, last[source])
        due = [source for source in due if credit[source] >= 1]
    time.sleep(0.002)
print(json.dumps({"sent": sent, "first": first, "last": last}))
"""

RECEIVER = """
import collections, json, select, socket, sys, time
SO_RCVBUFFORCE = 33  # root may exceed rmem_max: a busy machine must not drop what XDP passed
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 26)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
counts, stop_at, watched = collections.Counter(), None, [s, sys.stdin]
while stop_at is None or time.time() < stop_at:
    for ready in select.select(watched, [], [], 0.2)[0]:
        if ready is sys.stdin:
            stop_at, watched = time.time() + 1, [s]
        else:
            counts[ready.recvfrom(64)[1][0]] += 1
print(json.dumps(counts), flush=True)
"""

COUNTERS = """
import json
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel
with _fw_kernel.pinned_maps("/sys/fs/bpf/xdpfleet/eth0") as maps:
    kernel = _fw_kernel.KernelRuleset(maps)
    counters = kernel.counters()
    passed = _fw_kernel.PerCpuRecords(maps["xf_passed"], max(counters) + 1)
    hits = _fw_kernel.PerCpuRecords(maps["xf_hits"], max(counters) + 1)
    sources = [str(kernel.rule_at(number)[0].source) for number in range(len(kernel))]
print(json.dumps(dict((source, {"passed": [packets for packets, _ in passed.per_cpu(counter)],
                                "limited": [packets for packets, _ in hits.per_cpu(counter)]})
                      for source, counter in zip(sources, counters))))
"""


@pytest.fixture(scope="module")
def fleet():
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    with Lab.running(1, LAYOUT) as lab:
        yield lab


def succeeded(result):
    assert not result.get("failed"), result
    return result


def send_from_both_cpus(fleet, host):
    """{"sent", "first", "last"} per source (summed, earliest, latest over both senders) and the receiver's
    datagrams per source."""
    receiver = subprocess.Popen(["nsenter", "-t", str(host.pid), "--net", "--", PYTHON, "-u", "-c", RECEIVER,
                                 host.address, str(PORT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    senders = []
    try:
        assert receiver.stdout.readline().strip() == "ready"
        start_at = time.time() + 1.5  # both senders up and waiting
        senders = [subprocess.Popen(["ip", "netns", "exec", fleet.client.netns, PYTHON, "-c", SENDER, str(cpu),
                                     host.address, str(PORT), str(start_at), str(SECONDS),
                                     json.dumps({source: pps / len(CPUS) for source, pps in SENDS.items()})],
                                    stdout=subprocess.PIPE, text=True) for cpu in CPUS]
        reports = [json.loads(sender.communicate(timeout=SECONDS + 30)[0]) for sender in senders]
        received = json.loads(receiver.communicate("done\n", timeout=30)[0])
    finally:
        for process in senders + [receiver]:
            process.kill()
            process.wait()
    return {source: {"sent": sum(report["sent"][source] for report in reports),
                     "first": min(report["first"][source] for report in reports),
                     "last": max(report["last"][source] for report in reports),
                     "received": received.get(source, 0)} for source in SENDS}


@pytest.fixture(scope="module")
def measured(fleet):
    """Per case (the rule's source prefix): the firewall's passed and limited packets by CPU, and per source
    what was sent, over what span, and what the receiver got."""
    host = fleet.hosts[0]
    for address in SENDS:
        assert fleet.client.run("ip address replace %s/24 dev %s" % (address, fleet.client.ifname)).rc == 0
    succeeded(run_module(host, "xdp_program", {"interface": "eth0", "object": str(FIREWALL)}))
    succeeded(run_module(host, "xdp_rules", {"interface": "eth0", "state": "overridden", "config": RULES,
                                             "default_action": "pass"}))
    sources = send_from_both_cpus(fleet, host)
    counters = json.loads(on_host(host, COUNTERS))
    for source, figures in sources.items():
        print("%s sent %d in %.2f s: %.0f pps, %.1f times the limit; received %d"
              % (source, figures["sent"], span(sources, [source]), rate(sources, [source]),
                 rate(sources, [source]) / LIMIT, figures["received"]))
    for rule, addresses in zip(RULES, CASES):
        count = counters[rule["source"]]
        print("%-10s passed %d (by CPU %s), limited %d (by CPU %s): %.3f times limit x span + burst (%d)"
              % (rule["name"], sum(count["passed"]), count["passed"], sum(count["limited"]), count["limited"],
                 sum(count["passed"]) / allowed(span(sources, addresses)), allowed(span(sources, addresses))))
    return counters, sources


def span(sources, addresses):
    """Seconds from the first datagram of these addresses to their last."""
    return (max(sources[source]["last"] for source in addresses)
            - min(sources[source]["first"] for source in addresses))


def allowed(seconds):
    """What one bucket lets through in `seconds` of traffic over its limit: the burst, then the limit."""
    return LIMIT * seconds + BURST


def rate(sources, addresses):
    """pps the addresses sent together."""
    return sum(sources[source]["sent"] for source in addresses) / span(sources, addresses)


def assert_overloaded(sources, addresses):
    assert rate(sources, addresses) >= LEAST_OVERLOAD * LIMIT, "%s sent only %.0f pps, less than %d times the %d" % (
        " and ".join(addresses), rate(sources, addresses), LEAST_OVERLOAD, LIMIT)


def assert_near(actual, expected, what):
    assert abs(actual - expected) <= TOLERANCE * expected, "%s: %d, %.1f%% off the %d expected" % (
        what, actual, 100.0 * (actual - expected) / expected, expected)


def test_a_source_at_ten_times_its_limit_gets_the_limit_through_on_two_cpus(measured):
    counters, sources = measured
    count, figures = counters[ONE + "/32"], sources[ONE]
    assert_overloaded(sources, [ONE])
    assert all(count["passed"][cpu] and count["limited"][cpu] for cpu in CPUS), (
        "each CPU must have passed and limited packets of the source: %s" % count)
    passed = sum(count["passed"])
    assert_near(passed, allowed(span(sources, [ONE])), "passed")
    assert passed + sum(count["limited"]) == figures["sent"], "the firewall did not see every datagram sent"
    assert figures["received"] == passed


def test_a_second_source_is_limited_on_its_own(measured):
    counters, sources = measured
    for address in PER_SOURCE:
        assert_overloaded(sources, [address])
        assert_near(sources[address]["received"], allowed(span(sources, [address])), "received from " + address)
    passed = sum(counters[PER_SOURCE[0] + "/31"]["passed"])
    assert passed == sum(sources[address]["received"] for address in PER_SOURCE)


def test_per_rule_the_sources_share_one_bucket(measured):
    counters, sources = measured
    count = counters[PER_RULE[0] + "/31"]
    assert_overloaded(sources, PER_RULE)
    passed = sum(count["passed"])
    assert_near(passed, allowed(span(sources, PER_RULE)), "passed for both sources")
    assert passed == sum(sources[address]["received"] for address in PER_RULE)


def test_a_source_under_its_limit_loses_nothing(measured):
    counters, sources = measured
    count, figures = counters[UNDER + "/32"], sources[UNDER]
    assert figures["sent"] >= 0.9 * SENDS[UNDER] * SECONDS, figures  # it did send for the whole time
    assert sum(count["limited"]) == 0, count
    assert sum(count["passed"]) == figures["sent"] == figures["received"], (count, figures)
