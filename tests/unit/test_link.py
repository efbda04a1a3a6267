"""An interface's XDP hook (attach, atomic replace, detach) and the netdev XDP features xdp_facts reports, against
this kernel, in a fresh interpreter and network namespace each, with real veth interfaces."""

import json
import os
import subprocess
import sys

import pytest

from tests.lab.layout import REPO

NETDEV_XDP_ACT_BASIC = 1
EBADF, EINVAL, EEXIST, EBUSY = 9, 22, 17, 16
PYTHONS = ["/usr/bin/python3", sys.executable]  # the hosts' interpreter, and the project's
COUNTER_SOURCE = os.path.join(os.path.dirname(__file__), "data", "counter.bpf.c")

# pyroute2 is made unimportable: the hook needs libbpf alone.
HOOK_LIFE_CYCLE = """
import json, os, subprocess, sys
sys.modules["pyroute2"] = None
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf, _link

subprocess.run(["ip", "link", "add", "xfv0", "type", "veth", "peer", "name", "xfv1"], check=True)
objects = [_libbpf.BpfObject(sys.argv[1]) for _ in range(2)]
for bpf_object in objects:
    bpf_object.load()
first, second = (bpf_object.programs[0].fd for bpf_object in objects)
ids = [_libbpf.prog_info(fd)["id"] for fd in (first, second)]
link = _link.Link("xfv0")
seen = {"ids": ids, "before": link.attached()}


def refusal(call, *args):
    try:
        call(*args)
    except _link.LinkError as error:
        return {"errno": error.errno, "message": str(error)}


link.attach(first, "native")
seen["attached"] = link.attached()
seen["second_first_attach"] = refusal(link.attach, second, "native")
seen["replace_of_another"] = refusal(link.attach, second, "native", second)
link.attach(second, "native", first)
seen["replaced"] = link.attached()
seen["detach_of_another"] = refusal(link.detach, "native", first)
link.detach("native", second)
seen["detached"] = link.attached()
seen["not_a_program"] = refusal(_link.Link("lo").attach, os.open("/dev/null", os.O_RDONLY), "skb")
seen["missing"] = refusal(_link.Link, "xfnope0")
seen["features"] = _link.xdp_features([link.index])
print(json.dumps(seen))
"""


def _in_fresh_namespace(python, script, *args):
    done = subprocess.run(["unshare", "--net", python, "-c", script] + list(args), capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / ".collections"), "PATH": os.environ["PATH"]},
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def counter_object(tmp_path_factory):
    target = str(tmp_path_factory.mktemp("link") / "counter.o")
    include = "-I/usr/include/%s-linux-gnu" % os.uname().machine
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", include, "-c", COUNTER_SOURCE, "-o", target], check=True)
    return target


@pytest.mark.parametrize("python", PYTHONS)
def test_attach_replace_and_detach_need_libbpf_alone_and_touch_only_the_expected_program(python, counter_object):
    seen = _in_fresh_namespace(python, HOOK_LIFE_CYCLE, counter_object)
    first, second = seen["ids"]
    assert seen["before"] == [0, None]
    assert seen["attached"] == [first, "native"]
    assert seen["second_first_attach"]["errno"] in (EBUSY, EEXIST)
    assert seen["second_first_attach"]["message"] == \
        "cannot attach an XDP program in native mode to xfv0: XDP program already attached"
    assert seen["replace_of_another"] == {
        "errno": EEXIST, "message": "cannot attach an XDP program in native mode to xfv0: "
                                    "Active program does not match expected"}
    assert seen["replaced"] == [second, "native"]
    assert seen["detach_of_another"]["errno"] == EEXIST
    assert seen["detach_of_another"]["message"].startswith("cannot detach the XDP program from xfv0: ")
    assert seen["detached"] == [0, None]
    assert seen["not_a_program"]["errno"] in (EBADF, EINVAL)
    assert seen["not_a_program"]["message"].startswith("cannot attach an XDP program in skb mode to lo: ")
    assert seen["missing"] == {"errno": None, "message": "interface xfnope0 does not exist on this host"}
    assert seen["features"] is None  # without pyroute2, xdp_facts reports no xdp_modes


FEATURES_IN_A_WORKER_THREAD = """
import json, socket, subprocess
from concurrent.futures import ThreadPoolExecutor
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _link

subprocess.run(["ip", "link", "add", "xfv0", "type", "veth", "peer", "name", "xfv1"], check=True)
lo, veth = socket.if_nametoindex("lo"), socket.if_nametoindex("xfv0")
with ThreadPoolExecutor(max_workers=1) as pool:
    features = pool.submit(_link.xdp_features, [lo, veth]).result()
from pyroute2 import IPRoute
with IPRoute() as ipr:
    whole_library = ipr.link_lookup(ifname="xfv0") == [veth]
print(json.dumps({"features": features, "lo": lo, "veth": veth, "whole_library": whole_library}))
"""


@pytest.mark.parametrize("python", PYTHONS)
def test_features_come_from_the_netdev_family_in_a_worker_thread(python):
    seen = _in_fresh_namespace(python, FEATURES_IN_A_WORKER_THREAD)
    lo, veth = str(seen["lo"]), str(seen["veth"])
    assert seen["features"][lo] == 0  # the loopback device takes no XDP program natively
    assert seen["features"][veth] & NETDEV_XDP_ACT_BASIC  # veth does
    assert seen["whole_library"]
