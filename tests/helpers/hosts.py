"""Run xdpfleet modules and Python on a lab host the fast way (nsenter, no SSH, no controller start-up),
and playbooks against a lab the real way (ansible-playbook over SSH)."""

import json
import os
import re
import subprocess
import tempfile
import textwrap
from pathlib import Path

import ansible
import yaml

from ansible_collections.xdpfleet.xdp.plugins.action import xdp_rules as xdp_rules_action
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from tests.lab.layout import REPO

PYTHON = str(REPO / ".venv" / "bin" / "python")
HOST_PYTHON = "/usr/bin/python3"  # the lab inventory's ansible_python_interpreter
MODULES = REPO / "plugins" / "modules"
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def _nsenter(host):
    return ["nsenter", "-t", str(host.pid), "--net", "--mount", "--uts", "--"]


def _ansible_alone():
    """A directory holding only the virtualenv's `ansible` package: what Ansible ships to a host with a
    module, so the host's own interpreter runs it with the host's libraries (its pyroute2 among them)."""
    directory = Path(tempfile.gettempdir()) / "xdpfleet-ansible-alone"
    directory.mkdir(exist_ok=True)
    link = directory / "ansible"
    if not link.is_symlink():
        link.symlink_to(Path(ansible.__file__).parent)
    return str(directory)


def module_env(python=PYTHON, **extra):
    """The environment of a module run: the collection importable, no SSH session unless given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SSH_")}
    paths = [str(REPO / ".collections")] + ([_ansible_alone()] if python != PYTHON else [])
    return dict(env, PYTHONPATH=os.pathsep.join(paths), **extra)


def module_command(host, name, python=PYTHON):
    return _nsenter(host) + [python, str(MODULES / ("%s.py" % name))]


def as_sent(name, args):
    """The arguments as they reach the module on the host: through its action plugin's hands where it has one."""
    return xdp_rules_action.module_args_with_content(args) if name == "xdp_rules" else args


def refused_on_controller(error):
    """The result of a task whose action plugin refuses it before the module runs (AnsibleActionFail)."""
    return {"failed": True, "msg": str(error)}


def module_input(args, check=False, name=None):
    return json.dumps({"ANSIBLE_MODULE_ARGS": dict(as_sent(name, args), _ansible_check_mode=check)})


def run_module(host, name, args, check=False, env=None, timeout=300, python=PYTHON):
    """Runs plugins/modules/<name>.py in the host's namespaces as ansible would (with the virtualenv's
    interpreter unless `python` is given); returns its result dict."""
    try:
        text = module_input(args, check, name)
    except XdpfleetError as error:
        return refused_on_controller(error)
    done = subprocess.run(module_command(host, name, python), input=text,
                          capture_output=True, text=True, env=env or module_env(python), timeout=timeout, cwd=REPO, check=False)
    lines = done.stdout.strip().splitlines()
    assert lines, "%s gave no result: rc=%d %s" % (name, done.returncode, done.stderr[-2000:])
    return json.loads(lines[-1])


class ModuleRunner:
    """tests/reliability/module_runner.py in the host's namespaces: many module runs, one start-up."""

    def __init__(self, host):
        runner = str(REPO / "tests" / "reliability" / "module_runner.py")
        self.process = subprocess.Popen(_nsenter(host) + [PYTHON, runner],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=module_env())

    def run(self, name, args, env=None):
        try:
            sent = as_sent(name, args)
        except XdpfleetError as error:
            return refused_on_controller(error)
        self.process.stdin.write(json.dumps({"module": name, "args": sent, "env": env or {}}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the module runner ended"
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


def on_host(host, code, timeout=300):
    """Runs Python code in the host's namespaces with the collection importable; returns its stdout."""
    script = "import sys; sys.path.insert(0, %r)\n" % str(REPO / ".collections") + textwrap.dedent(code)
    done = subprocess.run(_nsenter(host) + [PYTHON, "-c", script], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def ansible_env(**extra):
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **extra)
    env["PATH"] = "%s:%s" % (os.path.dirname(PYTHON), env["PATH"])
    return env


def playbook_command(inventory, path, variables_file, *options):
    return ["ansible-playbook", "-i", str(inventory), str(path), "-e", "@%s" % variables_file] + list(options)


def write_variables(directory, name, variables):
    path = directory / ("%s.vars.yml" % name)
    path.write_text(yaml.safe_dump(variables))
    return path


def playbook(lab, path, directory, variables, *options, env=None, timeout=900):
    """Runs a playbook (a path, or a name under playbooks/) against the lab; returns the CompletedProcess."""
    path = path if os.path.isabs(str(path)) else REPO / "playbooks" / path
    variables_file = write_variables(directory, os.path.basename(str(path)), variables)
    return subprocess.run(playbook_command(lab.inventory, path, variables_file, *options), cwd=REPO,
                          env=env or ansible_env(), capture_output=True, text=True, timeout=timeout, check=False)


def recap(output):
    """{host: {changed, unreachable, failed}} from the PLAY RECAP in a playbook run's output."""
    return {host: {"changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
            for host, changed, unreachable, failed in RECAP.findall(output)}


def ad_hoc(inventory, host_name, module, args, options=(), env=None, timeout=180):
    """Runs one module on one host with `ansible` over SSH; returns its result dict with "failed" set.

    The result is read from the tree callback's file, not parsed out of the screen output.
    """
    with tempfile.TemporaryDirectory() as tree:
        argv = [str(REPO / ".venv" / "bin" / "ansible"), "-i", str(inventory), host_name, "-m", module]
        argv += ["-a", json.dumps(args)] * bool(args) + list(options)
        env = dict(env or ansible_env(), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                   ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.tree", ANSIBLE_CALLBACK_TREE_DIR=tree)
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO, check=False)
        result_file = Path(tree) / host_name
        assert result_file.exists(), "no result from ansible: %s %s" % (done.stdout, done.stderr)
        result = json.loads(result_file.read_text())
        result["failed"] = done.returncode != 0
        return result
