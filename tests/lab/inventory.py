"""The Ansible inventory of a lab (git-ignored, rewritten by every `up`)."""

from pathlib import Path

import yaml

from .layout import REPO

SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
ROLE_SETTINGS = Path(__file__).with_name("role_settings.yml")
REPORT_DIR = REPO / "reports" / "stats"  # git-ignored


def write(path: Path, hosts, layout) -> None:
    group = {
        "hosts": {
            host.name: {"ansible_host": host.address, "lab_netns": host.netns, "xdp_interfaces": [host.ifname]}
            for host in hosts
        },
        "vars": {
            "ansible_user": "root",
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": str(layout.client_key),
            "ansible_ssh_common_args": SSH_ARGS,
            "ansible_python_interpreter": "/usr/bin/python3",
            # where traffic comes from in the lab, for demos and tests that send it
            "lab_client_netns": layout.client_name,
            "lab_client_address": layout.client_address,
            "lab_controller_address": layout.bridge_address,
            "stats_report_dir": str(REPORT_DIR),
            **yaml.safe_load(ROLE_SETTINGS.read_text()),
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Written by `python -m tests.lab up`; do not edit.\n"
    path.write_text(text + yaml.safe_dump({"all": {"children": {"lab": group}}}, sort_keys=False))


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
