"""docs/RULES.md's flood-defence example is a valid rule set that the program can hold, and behaves as the text
after it says."""

import re
from pathlib import Path

import yaml
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_slots, _libbpf
from tests.helpers import reference
from tests.helpers.reference import parse_rules

RULES_MD = Path(__file__).resolve().parents[2] / "docs" / "RULES.md"
FIREWALL = Path(__file__).resolve().parents[2] / "build" / "bpf" / "xdp_firewall.o"


def flood_defence_task():
    text = RULES_MD.read_text()
    section = text[text.index("## Flood defence: an example"):]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)[:1]
    (task,) = yaml.safe_load(block)
    return task["xdpfleet.xdp.xdp_rules"]


def test_the_flood_defence_example_compiles_within_the_programs_limits():
    task = flood_defence_task()
    rules = parse_rules([dict((key, value) for key, value in rule.items() if key != "name") for rule in task["config"]])
    reference.compile_rules([rule._replace(expires_after=None) for rule in rules], task["default_action"])


def test_a_syn_over_its_limit_is_dropped_whoever_sends_it_and_within_it_the_admins_pass():
    task = flood_defence_task()
    config = [dict((key, value) for key, value in rule.items() if key not in ("name", "expires_after"))
              for rule in task["config"]]
    with _libbpf.BpfObject(str(FIREWALL)) as firewall:
        firewall.load()
        maps = reference.map_fds(firewall)
        _fw_slots.apply_ruleset(maps, reference.compile_rules(parse_rules(config), task["default_action"]))
        fd = firewall.program("xdpfleet_fw").fd

        admin, stranger = (bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                                 IP(src=source, dst="198.19.0.1") / TCP(dport=22, flags="S"))
                           for source in ("198.18.0.10", "198.18.9.9"))
        admin = [_libbpf.prog_test_run(fd, copy)[0] for copy in [admin] * 101]
        stranger = _libbpf.prog_test_run(fd, stranger)[0]
    assert admin == [2] * 100 + [1] and stranger == 1  # burst 100 passes ssh-admins, the 101st is limited
