"""The netdev generic netlink query of xdp_facts and the XDP attach of xdp_program, against this kernel, in a
fresh interpreter and network namespace each: what they import of pyroute2 is what a module process would."""

import json
import subprocess
import sys

import pytest

from tests.lab.layout import REPO

NETDEV_XDP_ACT_BASIC = 1

QUERY_THEN_FULL_IMPORT = """
import json, socket, sys
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _netlink

lo = socket.if_nametoindex("lo")
lean = _netlink.xdp_features([lo])
left = sorted(name for name in sys.modules if name.split(".")[0] == "pyroute2")

from pyroute2 import IPRoute
with IPRoute() as ipr:
    ipr.link("add", ifname="xfv0", kind="veth", peer="xfv1")
    veth = ipr.link_lookup(ifname="xfv0")[0]
print(json.dumps({"lean": lean[lo], "left": left, "full": _netlink.xdp_features([lo, veth]), "lo": lo, "veth": veth}))
"""


def _in_fresh_namespace(python, script):
    done = subprocess.run(["unshare", "--net", python, "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / ".collections")}, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# the hosts' interpreter and pyroute2 (python3-pyroute2), and the project's (pinned in requirements.txt)
@pytest.mark.parametrize("python", ["/usr/bin/python3", sys.executable])
def test_features_come_without_pyroute2s_package_import_and_a_later_import_gets_the_whole_library(python):
    seen = _in_fresh_namespace(python, QUERY_THEN_FULL_IMPORT)
    assert seen["left"] == []
    lo, veth = str(seen["lo"]), str(seen["veth"])
    assert seen["lean"] == seen["full"][lo] == 0  # the loopback device takes no XDP program natively
    assert seen["full"][veth] & NETDEV_XDP_ACT_BASIC  # veth does


REFUSED_ATTACH = """
import json, os, sys
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _netlink

not_a_program = os.open("/dev/null", os.O_RDONLY)
with _netlink.Link("lo") as link:
    try:
        link.attach(not_a_program, "skb")
    except _netlink.NetlinkError as error:
        refused = {"errno": error.errno, "message": str(error)}
print(json.dumps({"refused": refused, "left": sorted(name for name in sys.modules if name.startswith("pyroute2"))}))
"""


@pytest.mark.parametrize("python", ["/usr/bin/python3", sys.executable])
def test_an_attach_goes_through_pyroute2s_netlink_core_and_reports_the_kernels_refusal(python):
    seen = _in_fresh_namespace(python, REFUSED_ATTACH)
    assert seen["left"] == []
    assert seen["refused"]["errno"] in (9, 22)  # EBADF or EINVAL: an fd that is not a BPF program
    assert seen["refused"]["message"].startswith("cannot attach an XDP program in skb mode to lo: ")


def test_an_attach_without_pyroute2_names_the_package(monkeypatch):
    from ansible_collections.xdpfleet.xdp.plugins.module_utils import _netlink

    for name in [name for name in sys.modules if name.split(".")[0] == "pyroute2"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(_netlink.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(_netlink.NetlinkError, match="python3-pyroute2"):
        with _netlink.Link("lo") as link:
            link.attach(-1, "skb")
