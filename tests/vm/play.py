"""One playbook run on one booted guest: the VM suites batch their tasks into one play (one SSH connection; the
guest runs under TCG) and assert on what each task registered."""

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.vm import guests

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def one_guest(layout):
    """One guest of layout booted; stopped on exit, also after a boot that failed part-way (guests, taps)."""
    try:
        guests.up(layout, 1)
        yield
    finally:
        guests.down(layout)


def results_of(layout, tasks, directory, name, timeout=1200):
    """{register: result} of tasks run as one play on layout's guest; the play must succeed."""
    names = [task["register"] for task in tasks if "register" in task]
    registered = "{" + ", ".join(f"'{name}': {name}" for name in names) + "}"
    save = {"name": "save", "delegate_to": "localhost", "ansible.builtin.copy": {
        "dest": str(directory / "results.json"), "mode": "0644", "content": "{{ %s | to_json }}" % registered}}
    playbook = directory / (name + ".yml")
    playbook.write_text(yaml.safe_dump([{"hosts": "vm", "gather_facts": False, "tasks": tasks + [save]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    # A stdin of its own: ansible-playbook refuses a non-blocking one, which qemu -daemonize can leave ours.
    done = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(guests.inventory_path(layout)),
                           str(playbook)], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO,
                          check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return json.loads((directory / "results.json").read_text())
