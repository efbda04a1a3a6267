"""SIGKILL in the middle of a 100,000-rule update: the data plane stays on the complete old rule set
(active slot, its rules, packet verdicts through the attached program), and the next run converges."""

import hashlib
import os
import signal
import subprocess
import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_kernel, _layout
from tests.helpers import kernel
from tests.helpers.hosts import ModuleRunner, module_command, module_env, module_input
from tests.reliability.common import BASE_RULES

RULES = 100_000
XDP_DROP, XDP_PASS = 1, 2
RULE_SIZE = _layout.RULE.size


def block_list(base_port):
    """100,000 drop rules, source 198.19.x.y/32, port base_port + (index >> 16)."""
    return [{"action": "drop", "source": "198.19.%d.%d/32" % (index >> 8 & 255, index & 255), "protocol": "udp",
             "port": base_port + (index >> 16)} for index in range(RULES)]


SET_A, SET_B = block_list(1000), block_list(2000)


def overridden(config):
    return {"interface": "eth0", "state": "overridden", "config": config}


class Firewall:
    """The firewall maps of a host's eth0, opened by id from the controller."""

    def __init__(self, host):
        prog_id = kernel.attached_programs(host)["eth0"]
        self.prog = libbpf.prog_fd_by_id(prog_id)
        self.maps = {}
        for map_id in libbpf.prog_info(self.prog)["map_ids"]:
            fd = libbpf.map_fd_by_id(map_id)
            self.maps[libbpf.map_info(fd)["name"]] = fd

    def active_slot(self):
        return _fw_kernel.read_config(self.maps)[0]

    def first_rule(self, slot):
        return libbpf.array_values(self.maps["xf_rules_%d" % slot], RULE_SIZE, 1)

    def slot_digest(self, slot):
        return hashlib.sha256(libbpf.array_values(self.maps["xf_rules_%d" % slot], RULE_SIZE, RULES)).hexdigest()

    def verdict(self, source, port):
        frame = bytes(Ether() / IP(src=source, dst="198.18.120.11") / UDP(sport=4000, dport=port) / (b"x" * 18))
        return libbpf.prog_test_run(self.prog, frame)[0]

    def close(self):
        for fd in [self.prog] + list(self.maps.values()):
            os.close(fd)


# (source, port, verdict under SET_A, verdict under SET_B): first, middle and last rules of each set
PROBES = [("198.19.0.5", 1000, XDP_DROP, XDP_PASS), ("198.19.17.112", 1001, XDP_DROP, XDP_PASS),
          ("198.19.134.159", 1001, XDP_DROP, XDP_PASS), ("198.19.0.5", 2000, XDP_PASS, XDP_DROP),
          ("198.19.134.159", 2001, XDP_PASS, XDP_DROP), ("198.19.134.160", 2001, XDP_PASS, XDP_PASS)]


def verdicts(firewall):
    return [firewall.verdict(source, port) for source, port, under_a, under_b in PROBES]


def kill_while_writing(host, firewall, config):
    """Starts the module on config and SIGKILLs it once it has begun writing the inactive slot;
    returns how long it ran."""
    inactive = 1 - firewall.active_slot()
    untouched = firewall.first_rule(inactive)
    started = time.monotonic()
    update = subprocess.Popen(module_command(host, "xdp_rules"), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              env=module_env(), text=True)
    update.stdin.write(module_input(overridden(config), name="xdp_rules"))
    update.stdin.close()
    while firewall.first_rule(inactive) == untouched:
        assert update.poll() is None, "the update ended before it wrote anything"
        assert time.monotonic() - started < 600, "the update never started writing"
        time.sleep(0.005)
    update.send_signal(signal.SIGKILL)
    update.wait()
    return time.monotonic() - started


def test_sigkill_mid_update_keeps_the_old_set_and_the_next_run_converges(deployed):
    host = deployed.hosts[0]
    runner = ModuleRunner(host)
    firewall = Firewall(host)
    try:
        assert runner.run("xdp_rules", overridden(SET_A))["changed"]
        active, old_rules = firewall.active_slot(), firewall.slot_digest(firewall.active_slot())
        assert verdicts(firewall) == [under_a for source, port, under_a, under_b in PROBES]

        ran = kill_while_writing(host, firewall, SET_B)
        print("killed after %.1f s, mid-write of the inactive slot" % ran)
        assert firewall.active_slot() == active
        assert firewall.slot_digest(active) == old_rules
        assert verdicts(firewall) == [under_a for source, port, under_a, under_b in PROBES]
        # the desired-state file still describes the old set: names and rules read back as SET_A
        assert runner.run("xdp_rules", {"interface": "eth0", "state": "gathered"})["gathered"] == SET_A

        assert runner.run("xdp_rules", overridden(SET_B))["changed"]
        assert firewall.active_slot() != active
        assert verdicts(firewall) == [under_b for source, port, under_a, under_b in PROBES]
        assert not runner.run("xdp_rules", overridden(SET_B))["changed"]
    finally:
        runner.run("xdp_rules", overridden(BASE_RULES))
        firewall.close()
        runner.close()
