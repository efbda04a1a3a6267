"""What each module ships to a host: the collection's module_utils that Ansible's own finder puts in its payload.

Ansible ships every module_util a module imports, found by scanning the imports anywhere in a file (inside
functions too), so the read-only modules must not import the loader, the bcc translator or the rule engine's
writing side even where they would never call them.
"""

import json
import subprocess
import sys

import pytest

from tests.lab.layout import REPO

READ_ONLY_MODULES = ("xdp_facts", "xdp_stats", "xdp_drops", "bpf_events")
WRITING_SIDE = ("_program", "_object_load", "_program_state", "_hook_chain", "_hook_dispatcher", "_bcc", "_rules",
                "_fw_compile", "_fw_slots", "_tracing", "_tracing_kinds", "_tracing_state")

# recursive_finder is what AnsiballZ runs to build a module's payload; it needs Ansible's collection loader,
# which is installed process-wide, hence a process of its own.
SHIPPED = """
import datetime, io, json, pathlib, sys, zipfile
from ansible._internal._ansiballz._builder import ExtensionManager
from ansible.executor.module_common import recursive_finder
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

repo = pathlib.Path(sys.argv[1]).resolve()
_AnsibleCollectionFinder(paths=[str(repo / ".collections")])._install()
prefix = "ansible_collections/xdpfleet/xdp/plugins/module_utils/"
shipped = {}
for path in sorted((repo / "plugins" / "modules").glob("*.py")):
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as archive:
        try:
            recursive_finder(path.stem, "ansible_collections.xdpfleet.xdp.plugins.modules." + path.stem,
                             path.read_bytes(), archive, datetime.datetime(2020, 1, 1), ExtensionManager())
        except Exception as error:  # an import the finder cannot resolve: reported by the tests
            shipped[path.stem] = "cannot be packed: %s" % error
            continue
        shipped[path.stem] = sorted(name[len(prefix):-3] for name in archive.namelist()
                                    if name.startswith(prefix) and name != prefix + "__init__.py")
print(json.dumps(shipped))
"""


@pytest.fixture(scope="module")
def shipped():
    done = subprocess.run([sys.executable, "-c", SHIPPED, str(REPO)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def packed(shipped, module):
    assert isinstance(shipped[module], list), shipped[module]
    return set(shipped[module])


def test_every_module_is_scanned(shipped):
    assert set(READ_ONLY_MODULES) | {"xdp_program"} <= set(shipped)
    assert {"_libbpf", "_ownership"} <= packed(shipped, "xdp_facts")


@pytest.mark.parametrize("module", READ_ONLY_MODULES)
def test_read_only_modules_ship_neither_the_loader_nor_bcc_nor_the_rule_writer(shipped, module):
    assert sorted(packed(shipped, module) & set(WRITING_SIDE)) == []


def test_the_loader_ships_bcc_for_compiler_bcc(shipped):
    assert {"_program", "_bcc"} <= packed(shipped, "xdp_program")
