"""Every module's EXAMPLES work as written from an installed collection: YAML tasks calling modules by FQCN
with documented options, no undefined variables, the firewall's own maps, and no path into the checkout.
Files and maps of a program the user brings are fine where the task's name says so ("your own")."""

import ast
import json
import re
import subprocess

import pytest
import yaml
from jinja2 import Environment, meta, nodes

from tests.lab.layout import REPO

MODULES = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("xdp_*.py"))
# variables Ansible defines for every task
MAGIC_VARIABLES = {"ansible_facts", "hostvars", "groups", "inventory_hostname", "playbook_dir", "item"}
# keys of a task that are not the module's
TASK_KEYWORDS = {"name", "register", "vars", "when", "loop", "delegate_to", "run_once", "become", "changed_when",
                 "failed_when", "check_mode", "diff", "tags", "notify", "ignore_errors", "no_log"}
# options naming a file the module reads on the controller or the host
INPUT_FILE_OPTIONS = {"src", "object"}
USERS_OWN = re.compile(r"\byour own\b", re.I)


def doc_strings(module):
    tree = ast.parse((REPO / "plugins" / "modules" / ("%s.py" % module)).read_text())
    blocks = ("DOCUMENTATION", "EXAMPLES", "RETURN")
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) in blocks}


DOCS = {module: doc_strings(module) for module in MODULES}


def fragments():
    """xdpfleet.xdp.attributes[.<part>] -> its YAML, from plugins/doc_fragments/attributes.py."""
    tree = ast.parse((REPO / "plugins" / "doc_fragments" / "attributes.py").read_text())
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
    names = {"DOCUMENTATION": "xdpfleet.xdp.attributes"}
    return {names.get(node.targets[0].id, "xdpfleet.xdp.attributes." + node.targets[0].id.lower()):
            yaml.safe_load(node.value.value) for node in body if isinstance(node, ast.Assign)}


def documented_options(module):
    documentation = yaml.safe_load(DOCS[module]["DOCUMENTATION"])
    parts = fragments()
    return set(documentation["options"]).union(*(parts.get(name, {}).get("options") or {}
                                                 for name in documentation.get("extends_documentation_fragment", [])))


def examples(module):
    tasks = yaml.safe_load(DOCS[module]["EXAMPLES"])
    assert isinstance(tasks, list) and all(isinstance(task, dict) and task.get("name") for task in tasks), \
        "%s EXAMPLES must be a list of named tasks" % module
    return tasks


def action_of(task):
    actions = [key for key in task if key not in TASK_KEYWORDS]
    assert len(actions) == 1, "task %r: one module per task, found %s" % (task["name"], actions)
    return actions[0], task[actions[0]] or {}


@pytest.fixture(scope="module")
def firewall_maps(tmp_path_factory):
    """The map names in the .maps section of the firewall's BTF, built from bpf/ as the role builds it."""
    build = tmp_path_factory.mktemp("bpf")
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "BUILD=%s" % build], check=True)
    types = json.loads(subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(build / "xdp_firewall.o")],
                                      capture_output=True, text=True, check=True).stdout)["types"]
    by_id = {btf_type["id"]: btf_type for btf_type in types}
    maps_section = next(btf_type for btf_type in types if btf_type["kind"] == "DATASEC" and btf_type["name"] == ".maps")
    return {by_id[variable["type_id"]]["name"] for variable in maps_section["vars"]}


def jinja_expressions(value):
    if isinstance(value, dict):
        return [text for item in value.values() for text in jinja_expressions(item)]
    if isinstance(value, list):
        return [text for item in value for text in jinja_expressions(item)]
    return [value] if isinstance(value, str) and "{{" in value else []


@pytest.mark.parametrize("module", MODULES)
def test_examples_call_known_modules_by_fqcn_with_documented_options(module):
    for task in examples(module):
        action, arguments = action_of(task)
        assert action.count(".") == 2, "task %r: %s is not a fully qualified collection name" % (task["name"], action)
        namespace, name = action.rsplit(".", 1)
        assert namespace in ("xdpfleet.xdp", "ansible.builtin"), action
        if namespace == "xdpfleet.xdp":
            assert name in MODULES, action
            assert sorted(set(arguments) - documented_options(name)) == [], task["name"]


@pytest.mark.parametrize("module", MODULES)
def test_examples_use_only_variables_they_define_and_results_the_modules_return(module):
    environment = Environment()
    registered = {}  # variable -> the xdpfleet module that registered it (None for other modules)
    for task in examples(module):
        action, arguments = action_of(task)
        defined = set(registered) | set(task.get("vars") or {}) | MAGIC_VARIABLES
        for text in jinja_expressions(arguments) + jinja_expressions(task.get("vars") or {}):
            tree = environment.parse(text)
            assert sorted(meta.find_undeclared_variables(tree) - defined) == [], \
                "task %r uses a variable no earlier example defines: %s" % (task["name"], text)
            for attribute in tree.find_all(nodes.Getattr):
                source = registered.get(getattr(attribute.node, "name", None))
                if isinstance(attribute.node, nodes.Name) and source:
                    assert attribute.attr in yaml.safe_load(DOCS[source]["RETURN"]), \
                        "task %r reads %s.%s, which %s does not return" % (task["name"], attribute.node.name,
                                                                           attribute.attr, source)
        if "register" in task:
            namespace, name = action.rsplit(".", 1)
            registered[task["register"]] = name if namespace == "xdpfleet.xdp" else None


@pytest.mark.parametrize("module", MODULES)
def test_examples_use_the_firewalls_maps_or_say_the_program_is_the_users(module, firewall_maps):
    for task in examples(module):
        action, arguments = action_of(task)
        users_own = bool(USERS_OWN.search(task["name"]))
        for option in sorted(INPUT_FILE_OPTIONS & set(arguments)):
            # a relative path resolves beside the playbook, not in the collection; the collection's
            # own firewall is deployed by the firewall role
            assert users_own, "task %r: %s %s is no file an installed collection provides" % (
                task["name"], option, arguments[option])
        if action == "xdpfleet.xdp.xdp_map":
            if arguments["map"].startswith("/") or "pin_dir" in arguments:
                assert users_own, "task %r: a map outside the firewall's pins must be labelled" % task["name"]
            else:
                assert arguments["map"] in firewall_maps, "task %r: the firewall has no map %s" % (
                    task["name"], arguments["map"])


@pytest.mark.parametrize("module", MODULES)
def test_macros_the_docs_define_are_ones_the_firewall_source_reads(module):
    sources = "".join(path.read_text() for path in (REPO / "bpf").glob("xdp_firewall*.[ch]"))
    configurable = set(re.findall(r"#\s*(?:ifndef|ifdef)\s+(\w+)", sources))
    shown = DOCS[module]["DOCUMENTATION"] + "".join(
        yaml.safe_dump(task) for task in examples(module) if not USERS_OWN.search(task["name"]))
    assert sorted(set(re.findall(r"-D(\w+)", shown)) - configurable) == []
