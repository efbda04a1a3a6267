"""hook: dispatcher's decisions without a dispatcher (current or not, modes, chain-call action names, the refusal
message), and the refusal on this machine's kernel, for real: it loads no extension program (freplace), so the
module must fail before touching the interface, saying why. The dispatcher itself runs in tests/vm/test_dispatcher.py
on Debian 12's kernel."""

import errno
import os
import subprocess
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _hook_dispatcher as dispatcher
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libxdp as libxdp
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _program as program
from ansible_collections.xdpfleet.xdp.plugins.module_utils._hostfs import LOCK_DIR
from ansible_collections.xdpfleet.xdp.plugins.module_utils._link import ifindex
from ansible_collections.xdpfleet.xdp.plugins.module_utils._object_load import ProgramError
from tests.helpers.netns import in_namespace

REPO = Path(__file__).resolve().parents[2]
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
INTERFACE = "xdt0"
SHA = "ab" * 32
OURS = {"owner": "xdpfleet", "mode": "native", "object_sha256": SHA, "program": "xdpfleet_fw",
        "pin_dir": "/sys/fs/bpf/xdpfleet/eth0", "priority": 5, "chain_call_actions": ["pass"],
        "maps": [{"name": "xf_rules", "max_entries": 1024}]}
REQUEST = {"program": None, "pin_dir": "/sys/fs/bpf/xdpfleet/eth0", "priority": 5, "chain_call_actions": ["pass"],
           "map_sizes": {}}


def test_action_names_follow_enum_xdp_action():
    assert libxdp.ACTIONS.index("aborted") == 0 and libxdp.ACTIONS.index("redirect") == 4
    assert libxdp.actions_mask(["pass"]) == 1 << 2
    assert libxdp.action_names(libxdp.actions_mask(["drop", "pass", "pass"])) == ["drop", "pass"]


def test_requested_actions_are_in_libxdps_order_each_once():
    assert dispatcher.requested_actions(["redirect", "pass", "redirect", "aborted"]) == ["aborted", "pass", "redirect"]


@pytest.mark.parametrize("change", [{}, {"program": "xdpfleet_fw"}, {"chain_call_actions": ["pass", "pass"]}])
def test_the_same_object_priority_and_actions_are_current(change):
    assert dispatcher.is_current(OURS, SHA, dict(REQUEST, **change))


@pytest.mark.parametrize("change", [{"priority": 6}, {"chain_call_actions": ["pass", "drop"]},
                                    {"pin_dir": "/sys/fs/bpf/xdpfleet/eth1"}, {"program": "other"},
                                    {"map_sizes": {"xf_rules": 2048}}])
def test_any_other_setting_is_not_current(change):
    assert not dispatcher.is_current(OURS, SHA, dict(REQUEST, **change))


def test_another_object_is_not_current():
    assert not dispatcher.is_current(OURS, "cd" * 32, REQUEST)


def test_the_dispatchers_mode_is_kept_and_another_refused():
    hook = {"mode": "skb", "programs": []}
    assert dispatcher.attach_mode(hook, "auto") == "skb"
    assert dispatcher.attach_mode(None, "native") == "native"
    with pytest.raises(ProgramError, match="runs in skb mode; mode native would need it detached"):
        dispatcher.attach_mode(hook, "native")
    with pytest.raises(ProgramError, match="cannot run in mode hw"):
        dispatcher.attach_mode(None, "hw")


def test_the_refusal_says_why_names_the_fallback_and_carries_the_reason():
    refusal = dispatcher.DispatcherUnavailable(dispatcher.extension_refusal(errno.EPERM))
    assert str(refusal).startswith("hook: dispatcher cannot run on this host: the kernel refuses extension programs")
    assert "EPERM (Operation not permitted)" in str(refusal)
    assert "Nothing was changed; use hook: chained instead" in str(refusal)
    assert refusal.details["dispatcher"]["available"] is False
    assert refusal.details["dispatcher"]["reason"].startswith("the kernel refuses extension programs")


def test_another_errno_is_named_without_the_policy_note():
    reason = dispatcher.extension_refusal(errno.EINVAL)
    assert "EINVAL (Invalid argument)" in reason and "policy" not in reason


# --- this machine's kernel -------------------------------------------------------------------

def _extension_errno(dispatcher_object):
    """The essence of the reproducer: xdp-dispatcher.o's xdp_pass loaded, then loaded again as an extension
    (BPF_PROG_TYPE_EXT) of itself; the second load's errno, 0 when the kernel takes it."""
    with libbpf.BpfObject(dispatcher_object) as target, libbpf.BpfObject(dispatcher_object) as extension:
        for bpf_object in (target, extension):
            for prog in bpf_object.programs:
                prog.set_autoload(prog.name == "xdp_pass")
        target.load()
        extension.program("xdp_pass").set_extension_of(target.program("xdp_pass").fd, "xdp_pass")
        try:
            extension.load()
        except libbpf.LibbpfError as error:
            return error.errno
    return 0


@pytest.fixture(scope="module")
def refused_errno():
    """This kernel's answer to an extension program; the tests below are about a kernel that refuses them."""
    path = libxdp.dispatcher_object()
    if path is None:
        pytest.skip("libxdp1 (xdp-dispatcher.o) is not installed")
    err = _extension_errno(path)
    if not err:
        pytest.skip("this kernel loads extension programs; the refusal is tested where one does not (6.18 here)")
    return err


def test_this_kernel_refuses_extension_programs_with_eperm(refused_errno):
    assert refused_errno == errno.EPERM, os.strerror(refused_errno)
    assert dispatcher.unavailable_reason() == dispatcher.extension_refusal(errno.EPERM)


def _attached_id():
    return libbpf.xdp_query(ifindex(INTERFACE))["prog_id"]


@pytest.fixture
def veth():
    """A veth (xdt0) in a namespace of this test: (namespace, run(function, *args) inside it)."""
    namespace = "xdt-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "-n", namespace, "link", "add", INTERFACE, "type", "veth", "peer", "name", "xdt1"],
                       check=True)
        yield lambda function, *args: in_namespace(namespace, function, *args)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=True)


def _attach_alone(path):
    """Attaches the program of path alone (as hook: exclusive does); returns its id."""
    with libbpf.BpfObject(path) as bpf_object:
        bpf_object.load()
        libbpf.xdp_attach(ifindex(INTERFACE), bpf_object.programs[0].fd, 1 << 2)  # XDP_FLAGS_DRV_MODE
    return _attached_id()


def test_no_dispatcher_is_read_from_an_empty_hook_nor_from_a_program_alone(veth):
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    assert veth(libxdp.dispatcher_programs, INTERFACE) is None
    assert veth(_attach_alone, str(REPO / "build" / "bpf" / "xdp_pass.o"))
    assert veth(libxdp.dispatcher_programs, INTERFACE) is None


@pytest.mark.parametrize("check_mode", [False, True])
def test_the_module_fails_before_touching_the_interface(refused_errno, veth, check_mode):
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    lock_dir_existed, pin_dir = os.path.isdir(LOCK_DIR), "/sys/fs/bpf/xdpfleet-test-%d" % os.getpid()
    params = dict(interface=INTERFACE, state="attached", object=str(FIREWALL), remote_src=True, compiler="clang",
                  cflags=[], program=None, mode="auto", pin_dir=pin_dir, object_sha256=None,
                  force=False, map_migration="keep", hook="dispatcher", priority=5, chain_call_actions=["pass"])
    try:
        with pytest.raises(dispatcher.DispatcherUnavailable) as refusal:
            veth(program.run, params, check_mode)
        assert refusal.value.details == {"dispatcher": {"available": False,
                                                        "reason": dispatcher.extension_refusal(errno.EPERM)}}
        assert veth(_attached_id) == 0
        assert not os.path.exists(pin_dir)
    finally:
        lock = os.path.join(LOCK_DIR, INTERFACE + ".lock")
        if os.path.exists(lock):
            os.unlink(lock)
        if not lock_dir_existed and os.path.isdir(LOCK_DIR) and not os.listdir(LOCK_DIR):
            os.rmdir(LOCK_DIR)
