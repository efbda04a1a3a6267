"""The reliability suite's own lab (prefix rl, 198.18.120.0/24, 3 hosts), deployed once with the
firewall and a small rule set; each test leaves the hosts deployed with BASE_RULES."""

from tests.lab import Layout
from tests.lab.layout import REPO

LAYOUT = Layout("rl", 120)
HOSTS = 3
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
SSH_PASS = {"name": "ssh", "action": "pass", "source": LAYOUT.bridge_address + "/32", "protocol": "tcp",
            "port": 22}
LOST_STATE_HOST = 1  # rl-h2: eth0 and a second interface, xt0 (a veth inside the host)
SECOND_INTERFACE = "xt0"
BASE_RULES = [SSH_PASS, {"name": "no-ping", "action": "drop", "protocol": "icmp"},
              {"name": "bench-net", "action": "drop", "source": "198.19.0.0/16"}]


def deploy_variables(rules=None, **extra):
    """deploy_xdp.yml variables: the object built by `make -C bpf` (the controller compile is tested elsewhere)."""
    return dict(xdp_firewall_object=str(FIREWALL), xdp_rules=BASE_RULES if rules is None else rules, **extra)
