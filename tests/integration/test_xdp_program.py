"""xdpfleet.xdp.xdp_program on lab hosts: real kernel, real SSH, ansible from the controller.

The tests run on a lab of their own (prefix xp, 198.18.40.0/24) so that other suites
attaching programs to the shared lab cannot disturb what is asserted here.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._layout import XF_SCHEMA_VERSION
from ansible_collections.xdpfleet.xdp.plugins.module_utils._ownership import META_MAP_NAME, decode_meta
from tests.helpers.hosts import ad_hoc
from tests.lab import Lab, Layout

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
LAYOUT = Layout("xp", 40)
FIREWALL = REPO / "build" / "bpf" / "xdp_firewall.o"
PORTS_SRC = str(DATA / "xt_ports.bpf.c")
LIBBPF = "/usr/lib/x86_64-linux-gnu/libbpf.so.1"
BPF_MAP_TYPE_HASH = 1
TEST_PIN_DIR = "/sys/fs/bpf/xdpfleet/eth0-itest"


@pytest.fixture(scope="module")
def fleet():
    with Lab.running(1, LAYOUT) as lab:
        yield lab


@pytest.fixture(scope="module")
def firewall():
    subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True)
    return str(FIREWALL)


@pytest.fixture
def host(fleet):
    """A lab host whose eth0 has no XDP program before and after the test."""
    host = fleet.hosts[0]
    _clean(host)
    yield host
    _clean(host)


def _clean(host):
    host.run("ip link set dev eth0 xdpdrv off; ip link set dev eth0 xdpgeneric off; rm -rf /sys/fs/bpf/xdpfleet")


def ansible_env(**extra):
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.update(extra)
    return env


def module(host, check=False, diff=False, env=None, **args):
    """Runs the module on host with `ansible`; returns its result dict (with "failed" on failure).

    At verbosity 3 the tree callback keeps the diff too.
    """
    return ad_hoc(LAYOUT.inventory, host.name, "xdpfleet.xdp.xdp_program", args,
                  ["--check"] * check + ["--diff", "-vvv"] * diff, env=env or ansible_env(), timeout=120)


def succeeded(result):
    assert not result.get("failed"), result
    return result


def kernel_state(host, pin_dir="/sys/fs/bpf/xdpfleet"):
    """What the host's kernel shows: the XDP attachment of eth0 and the pins under pin_dir."""
    shown = subprocess.run(["ip", "-n", host.netns, "-j", "-d", "link", "show", "dev", "eth0"],
                           capture_output=True, text=True, check=True).stdout
    link = json.loads(shown)[0].get("xdp")
    pins = host.run("find %s 2>/dev/null | sort" % pin_dir).out.split()
    return {"xdp": link, "pins": pins}


def kernel_maps():
    """(id, info, fd) of every map in the kernel; each fd is closed when the caller moves on."""
    for map_id in libbpf.map_ids():
        try:
            fd = libbpf.map_fd_by_id(map_id)
        except libbpf.LibbpfError:
            continue  # gone since it was listed
        try:
            yield map_id, libbpf.map_info(fd), fd
        finally:
            os.close(fd)


def meta_records(pin_dir):
    """Every xdpfleet_meta map in the kernel recording pin_dir: one per program xdpfleet loaded there."""
    records = []
    for map_id, info, fd in kernel_maps():
        if info["name"] == META_MAP_NAME:
            meta = decode_meta(libbpf.map_lookup(fd, b"\0\0\0\0", info["value_size"]))
            if meta and meta["pin_dir"] == pin_dir:
                records.append(map_id)
    return records


def maps_named(prefix):
    return [info["name"] for map_id, info, fd in kernel_maps() if info["name"].startswith(prefix)]


def existing_map_ids(ids):
    return sorted(set(ids) & set(libbpf.map_ids()))


def bpftool_hex(data):
    return " ".join("%02x" % byte for byte in data)


def write_entry(host, pin, key, value):
    result = host.run("bpftool map update pinned %s key hex %s value hex %s"
                      % (pin, bpftool_hex(key), bpftool_hex(value)))
    assert result.rc == 0, result


def read_entry(host, pin, key):
    result = host.run("bpftool -j map lookup pinned %s key hex %s" % (pin, bpftool_hex(key)))
    if result.rc != 0:
        return None
    return bytes(int(byte, 16) for byte in json.loads(result.out)["value"])


def firewall_hash_map(result):
    return next(item for item in result["maps"] if item["type"] == BPF_MAP_TYPE_HASH)


FIREWALL_SRC = str(REPO / "bpf" / "xdp_firewall.bpf.c")


def schema_cflags(version):
    """The firewall built with another XF_SCHEMA_VERSION (its header only defaults it)."""
    return ["-I", str(REPO / "bpf"), "-DXF_SCHEMA_VERSION=%d" % version]


def firewall_variant(tmp_path):
    """The firewall source with one more global: a different object, same map layout."""
    source = tmp_path / "xdp_firewall_variant.bpf.c"
    source.write_text((REPO / "bpf" / "xdp_firewall.bpf.c").read_text()
                      + "\nconst volatile __u32 xdpfleet_test_variant = 2;\n")
    return str(source)


# --- life cycle ------------------------------------------------------------------------------

def test_attach_again_upgrade_detach_again(host, firewall, tmp_path):
    """On its own pin_dir: the meta records it counts are then this test's alone."""
    first = succeeded(module(host, interface="eth0", object=firewall, pin_dir=TEST_PIN_DIR, diff=True))
    assert first["changed"] and first["owner"] == "xdpfleet" and first["mode"] == "native"
    assert first["diff"]["before"]["prog_id"] is None and first["diff"]["after"]["prog_id"] == first["prog_id"]
    assert kernel_state(host)["xdp"]["prog"]["id"] == first["prog_id"]
    assert sorted(kernel_state(host)["pins"]) == sorted(
        ["/sys/fs/bpf/xdpfleet", TEST_PIN_DIR] + [TEST_PIN_DIR + "/" + item["name"] for item in first["maps"]])
    assert host.run("stat -c %a /sys/fs/bpf/xdpfleet " + TEST_PIN_DIR).out.split() == ["700", "700"]

    rules = firewall_hash_map(first)
    pin = TEST_PIN_DIR + "/" + rules["name"]
    key, value = b"\x01" * rules["key_size"], b"\x07" * rules["value_size"]
    write_entry(host, pin, key, value)

    loads_before = meta_records(TEST_PIN_DIR)
    again = succeeded(module(host, interface="eth0", object=firewall, pin_dir=TEST_PIN_DIR))
    assert not again["changed"] and again["prog_id"] == first["prog_id"]
    assert again["maps"] == first["maps"]
    assert meta_records(TEST_PIN_DIR) == loads_before, "a no-change run loaded something"

    upgraded = succeeded(module(host, interface="eth0", src=firewall_variant(tmp_path), cflags=["-I", str(REPO / "bpf")],
                                pin_dir=TEST_PIN_DIR))
    assert upgraded["changed"] and upgraded["prog_id"] != first["prog_id"]
    assert upgraded["object_sha256"] != first["object_sha256"]
    assert kernel_state(host)["xdp"]["prog"]["id"] == upgraded["prog_id"]
    assert read_entry(host, pin, key) == value, "the rules did not survive the upgrade"
    assert {item["name"]: item["id"] for item in upgraded["maps"]} == {item["name"]: item["id"] for item in first["maps"]}

    detached = succeeded(module(host, interface="eth0", state="detached", pin_dir=TEST_PIN_DIR, diff=True))
    assert detached["changed"] and detached["diff"]["after"]["prog_id"] is None
    assert kernel_state(host) == {"xdp": None, "pins": []}
    map_ids = [item["id"] for item in upgraded["maps"]]
    assert _eventually(lambda: existing_map_ids(map_ids) == []), "orphan maps: %s" % existing_map_ids(map_ids)

    assert not succeeded(module(host, interface="eth0", state="detached", pin_dir=TEST_PIN_DIR))["changed"]


def _eventually(condition, timeout=5.0):
    """Maps are freed by the kernel after an RCU grace period, not at once."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_lost_pins_are_restored_from_the_kernel(host):
    first = succeeded(module(host, interface="eth0", src=PORTS_SRC))
    host.run("rm -rf /sys/fs/bpf/xdpfleet")
    again = succeeded(module(host, interface="eth0", src=PORTS_SRC))
    assert again["changed"] and again["prog_id"] == first["prog_id"] and again["owner"] == "xdpfleet"
    assert "/sys/fs/bpf/xdpfleet/eth0/xt_ports" in kernel_state(host)["pins"]
    assert not succeeded(module(host, interface="eth0", src=PORTS_SRC))["changed"]


def test_detaching_a_program_without_maps_leaves_no_pin_dir(host):
    succeeded(module(host, interface="eth0", object=str(REPO / "build" / "bpf" / "xdp_pass.o")))
    assert succeeded(module(host, interface="eth0", state="detached"))["changed"]
    assert kernel_state(host) == {"xdp": None, "pins": []}


def test_check_mode_changes_nothing(host):
    before = kernel_state(host)
    predicted = succeeded(module(host, check=True, diff=True, interface="eth0", src=PORTS_SRC))
    assert predicted["changed"] and predicted["diff"]["after"]["name"] == "xt_filter"
    assert kernel_state(host) == before

    attached = succeeded(module(host, interface="eth0", src=PORTS_SRC))
    before = kernel_state(host)
    upgrade = succeeded(module(host, check=True, interface="eth0", src=PORTS_SRC, cflags=["-DVARIANT=2"]))
    detach = succeeded(module(host, check=True, interface="eth0", state="detached"))
    assert upgrade["changed"] and detach["changed"]
    assert kernel_state(host) == before and before["xdp"]["prog"]["id"] == attached["prog_id"]


def test_layout_change_needs_reset(host):
    first = succeeded(module(host, interface="eth0", src=PORTS_SRC))
    write_entry(host, "/sys/fs/bpf/xdpfleet/eth0/xt_ports", b"\x09\x00", b"\x01")
    before = kernel_state(host)
    refused = module(host, interface="eth0", src=PORTS_SRC, cflags=["-DPORTS_MAX=64"])
    assert refused.get("failed") and "xt_ports" in refused["msg"] and "max_entries 16 -> 64" in refused["msg"]
    assert kernel_state(host) == before

    reset = succeeded(module(host, interface="eth0", src=PORTS_SRC, cflags=["-DPORTS_MAX=64"], map_migration="reset"))
    assert reset["changed"] and reset["prog_id"] != first["prog_id"]
    ports = next(item for item in reset["maps"] if item["name"] == "xt_ports")
    assert ports["max_entries"] == 64
    assert read_entry(host, "/sys/fs/bpf/xdpfleet/eth0/xt_ports", b"\x09\x00") is None


def test_maps_cross_a_schema_version_only_through_reset(host, firewall, tmp_path):
    """The version comes from the object's .rodata; the result's is the one recorded in the kernel (xdpfleet_meta)."""
    current, following = XF_SCHEMA_VERSION, XF_SCHEMA_VERSION + 1
    first = succeeded(module(host, interface="eth0", object=firewall, pin_dir=TEST_PIN_DIR))
    assert first["map_schema_version"] == current
    # a map the refusal lists among its first MESSAGES_SHOWN, which go in the object's order of maps
    rules = next(item for item in first["maps"] if item["name"] == "xf_s4h_0")
    pin = TEST_PIN_DIR + "/" + rules["name"]
    key, value = b"\x01" * rules["key_size"], b"\x07" * rules["value_size"]
    write_entry(host, pin, key, value)

    predicted = succeeded(module(host, check=True, diff=True, interface="eth0", src=FIREWALL_SRC,
                                 cflags=schema_cflags(following), pin_dir=TEST_PIN_DIR))
    assert predicted["changed"] and predicted["diff"]["before"]["map_schema_version"] == current
    assert predicted["diff"]["after"]["map_schema_version"] == following
    refused = assert_refused(host, "map xf_rules_0 has schema version %d, the new object %d" % (current, following),
                             src=FIREWALL_SRC, cflags=schema_cflags(following))
    assert "map %s has schema version %d, the new object %d" % (rules["name"], current, following) in refused["msg"]
    assert "set map_migration: reset" in refused["msg"].lower()

    reset = succeeded(module(host, interface="eth0", src=FIREWALL_SRC, cflags=schema_cflags(following),
                             pin_dir=TEST_PIN_DIR, map_migration="reset"))
    assert reset["changed"] and reset["map_schema_version"] == following
    assert not set(item["id"] for item in reset["maps"]) & set(item["id"] for item in first["maps"])
    assert read_entry(host, pin, key) is None, "a map of the old schema was carried over"

    write_entry(host, pin, key, value)
    same_schema = succeeded(module(host, interface="eth0", src=firewall_variant(tmp_path),
                                   cflags=schema_cflags(following), pin_dir=TEST_PIN_DIR))
    assert same_schema["changed"] and same_schema["maps"] == reset["maps"]
    assert read_entry(host, pin, key) == value


# --- refusals: each leaves the host as it was ---------------------------------------------------

def assert_refused(host, message, pin_dir=TEST_PIN_DIR, env=None, check=False, **args):
    before, loads = kernel_state(host), meta_records(pin_dir)
    args.setdefault("interface", "eth0")
    args.setdefault("pin_dir", pin_dir)
    result = module(host, env=env, check=check, **args)
    assert result.get("failed") and not result.get("changed"), result
    assert message in result["msg"], result["msg"]
    assert kernel_state(host) == before
    # no program loaded by the refused run; a record of an earlier test's program may vanish meanwhile (the
    # kernel frees a released program's maps after an RCU grace period)
    assert not set(meta_records(pin_dir)) - set(loads)
    return result


@pytest.mark.parametrize("args, message", [
    ({"interface": "xt-nope0"}, "interface xt-nope0 does not exist"),
    ({"mode": "hw"}, "does not support XDP hardware offload"),
    ({"object_sha256": "0" * 64}, "but object_sha256 expects " + "0" * 64),
    ({"pin_dir": "/run/xdpfleet-pins"}, "pin_dir /run/xdpfleet-pins is not on a bpf filesystem"),
])
def test_refusals(host, args, message):
    assert_refused(host, message, src=PORTS_SRC, **args)


def test_refusals_of_the_object(host):
    assert_refused(host, "has no XDP program", src=str(DATA / "xt_no_xdp.bpf.c"))
    assert_refused(host, "has several XDP programs (xt_first, xt_second); set program", src=str(DATA / "xt_two.bpf.c"))
    chosen = succeeded(module(host, interface="eth0", src=str(DATA / "xt_two.bpf.c"), program="xt_second"))
    assert chosen["program"] == "xt_second"


def test_verifier_rejection_carries_the_log(host):
    result = assert_refused(host, "end of the verifier log", src=str(DATA / "xt_rejected.bpf.c"))
    assert "invalid mem access" in result["msg"] and result["verifier_log"]
    assert maps_named("xt_unchecked") == []


def test_missing_clang_on_the_controller(host, tmp_path):
    (tmp_path / "ssh").symlink_to(shutil.which("ssh"))
    env = ansible_env(PATH="%s:%s" % (REPO / ".venv" / "bin", tmp_path))
    assert_refused(host, "clang was not found on the controller", env=env, src=PORTS_SRC)


def test_missing_libbpf_on_the_host(host):
    assert host.run("mount --bind /dev/null %s" % LIBBPF).rc == 0
    try:
        assert_refused(host, "install the 'libbpf1' package", src=PORTS_SRC)
    finally:
        host.run("umount %s" % LIBBPF)


def test_foreign_program_needs_force(host):
    loaded = host.run("ip link set dev eth0 xdpdrv obj %s sec xdp" % _compiled(DATA / "xt_ports.bpf.c"))
    assert loaded.rc == 0, loaded
    foreign_id = kernel_state(host)["xdp"]["prog"]["id"]
    assert_refused(host, "did not attach (id %d" % foreign_id, src=PORTS_SRC)
    assert_refused(host, "set force: true", state="detached")
    forced = succeeded(module(host, interface="eth0", src=PORTS_SRC, force=True, pin_dir=TEST_PIN_DIR))
    assert forced["changed"] and forced["owner"] == "xdpfleet" and forced["prog_id"] != foreign_id


def _compiled(source):
    """A foreign object: compiled outside xdpfleet, to be loaded by iproute2."""
    target = "/tmp/xt_foreign.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", str(source), "-o", target], check=True)
    return target


def test_mode_switch_is_refused(host):
    attached = succeeded(module(host, interface="eth0", src=PORTS_SRC, mode="skb", pin_dir=TEST_PIN_DIR))
    assert attached["mode"] == "skb"
    assert_refused(host, "attached in skb mode; switching to native mode", src=PORTS_SRC, mode="native",
                   cflags=["-DVARIANT=3"])
    assert not succeeded(module(host, interface="eth0", src=PORTS_SRC, pin_dir=TEST_PIN_DIR))["changed"]


# --- no packet leaks through an upgrade --------------------------------------------------------

DROPPED_PORT, PASSED_PORT = 9999, 9998
UPGRADES = 20
SENDER = r"""
import signal, socket, sys, time
target, ports = sys.argv[1], [int(port) for port in sys.argv[2:]]
sent = dict.fromkeys(ports, 0)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    while True:
        for port in ports:
            try:
                udp.sendto(b"xdpfleet", (target, port))
                sent[port] += 1
            except OSError:
                pass
        time.sleep(0.0005)
finally:
    print(" ".join("%d=%d" % item for item in sent.items()), flush=True)
"""
NFT_COUNTERS = """
table netdev xt_ingress {
    chain in {
        type filter hook ingress device eth0 priority 0;
        udp dport %d counter
        udp dport %d counter
    }
}
""" % (DROPPED_PORT, PASSED_PORT)
UPGRADE_PLAY = """
- name: Upgrade the program again and again
  hosts: %(host)s
  gather_facts: false
  tasks:
    - name: Swap between two builds of the same program
      xdpfleet.xdp.xdp_program:
        interface: eth0
        hook: %(hook)s
        src: %(src)s
        cflags: ["-DVARIANT={{ 2 + item %% 2 }}"]
      loop: "{{ range(%(count)d) | list }}"
      register: upgrades
    - name: Every run swapped in a new program
      ansible.builtin.assert:
        that:
          - upgrades.results | selectattr('changed') | list | length == %(count)d
          - upgrades.results | map(attribute='prog_id') | unique | list | length == %(count)d
"""


def nft_counters(host):
    listed = json.loads(host.run("nft -j list table netdev xt_ingress").out)["nftables"]
    counters = {}
    for item in listed:
        rule = item.get("rule")
        if rule:
            port = next(e["match"]["right"] for e in rule["expr"] if "match" in e)
            counters[port] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return counters


@pytest.mark.parametrize("hook, pin_dir", [("exclusive", "/sys/fs/bpf/xdpfleet/eth0"),
                                           ("chained", "/sys/fs/bpf/xdpfleet/eth0/next")])
def test_upgrades_leak_no_dropped_packet_and_lose_no_passed_one(host, fleet, firewall, tmp_path, hook, pin_dir):
    """Chained, the program sits behind the firewall (no rules: it passes everything) and is swapped in its slot."""
    if hook == "chained":
        succeeded(module(host, interface="eth0", object=firewall))
    succeeded(module(host, interface="eth0", hook=hook, src=PORTS_SRC))
    write_entry(host, pin_dir + "/xt_ports", DROPPED_PORT.to_bytes(2, "little"), b"\x01")
    (tmp_path / "nft.conf").write_text(NFT_COUNTERS)
    assert host.run("nft -f %s" % (tmp_path / "nft.conf")).rc == 0
    play = tmp_path / "upgrade.yml"
    play.write_text(UPGRADE_PLAY % {"host": host.name, "hook": hook, "src": PORTS_SRC, "count": UPGRADES})
    (tmp_path / "sender.py").write_text(SENDER)
    sender = subprocess.Popen(["ip", "netns", "exec", fleet.client.netns, "python3", str(tmp_path / "sender.py"),
                               host.address, str(DROPPED_PORT), str(PASSED_PORT)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        upgraded = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(LAYOUT.inventory),
                                   str(play)], capture_output=True, text=True, env=ansible_env(), cwd=REPO, check=False)
    finally:
        sender.terminate()
        sent = dict(pair.split("=") for pair in sender.communicate(timeout=30)[0].split())
        time.sleep(0.5)
        counters = nft_counters(host)
        host.run("nft delete table netdev xt_ingress")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    sent = {int(port): int(count) for port, count in sent.items()}
    assert sent[DROPPED_PORT] > 1000 and sent[PASSED_PORT] > 1000
    assert counters[DROPPED_PORT] == 0, "%d of %d dropped packets leaked" % (counters[DROPPED_PORT], sent[DROPPED_PORT])
    assert counters[PASSED_PORT] == sent[PASSED_PORT]


# --- hook: chained ---------------------------------------------------------------------------

CHAINED_PIN_DIR = "/sys/fs/bpf/xdpfleet/eth0/next"
DATAGRAMS = 200
UDP_BURST = ("import socket, sys\nudp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "for port in sys.argv[2:]:\n    for _ in range(%d):\n        udp.sendto(b'x', (sys.argv[1], int(port)))\n"
             % DATAGRAMS)


def chained_prog_id(host):
    """The id of the program in the firewall's next-program slot, None when the slot is empty."""
    value = read_entry(host, "/sys/fs/bpf/xdpfleet/eth0/xf_next", (0).to_bytes(4, "little"))
    return None if value is None else int.from_bytes(value, "little")


def chained_traffic(fleet, host, tmp_path):
    """nft's ingress counters per UDP port after DATAGRAMS datagrams to each port, and whether 3 pings got replies."""
    (tmp_path / "nft.conf").write_text(NFT_COUNTERS)
    assert host.run("nft -f %s" % (tmp_path / "nft.conf")).rc == 0
    try:
        fleet.client.run("python3 -c \"%s\" %s %d %d" % (UDP_BURST, host.address, DROPPED_PORT, PASSED_PORT))
        pinged = fleet.client.run("ping -n -q -c 3 -i 0.2 -W 1 %s" % host.address).rc == 0
        time.sleep(0.3)
        return nft_counters(host), pinged
    finally:
        host.run("nft delete table netdev xt_ingress")


def test_chained_program_runs_behind_the_firewall(host, fleet, firewall, tmp_path):
    """The firewall drops ICMP, the chained program a UDP port; each packet meets both verdicts, in that order."""
    refused = module(host, interface="eth0", hook="chained", src=PORTS_SRC)
    assert refused["failed"] and "attach the firewall first" in refused["msg"]
    assert kernel_state(host) == {"xdp": None, "pins": []}
    root = succeeded(module(host, interface="eth0", object=firewall))
    succeeded(ad_hoc(LAYOUT.inventory, host.name, "xdpfleet.xdp.xdp_rules",
                     {"interface": "eth0", "state": "overridden", "config": [{"action": "drop", "protocol": "icmp"}]},
                     env=ansible_env()))
    planned = succeeded(module(host, check=True, interface="eth0", hook="chained", src=PORTS_SRC))
    assert planned["changed"] and chained_prog_id(host) is None
    chained = succeeded(module(host, interface="eth0", hook="chained", src=PORTS_SRC))
    assert chained["changed"] and chained["owner"] == "xdpfleet" and chained["program"] == "xt_filter"
    assert chained["pin_dir"] == CHAINED_PIN_DIR and chained_prog_id(host) == chained["prog_id"]
    again = succeeded(module(host, interface="eth0", hook="chained", src=PORTS_SRC))
    assert not again["changed"] and again["prog_id"] == chained["prog_id"]
    write_entry(host, CHAINED_PIN_DIR + "/xt_ports", DROPPED_PORT.to_bytes(2, "little"), b"\x01")

    counters, pinged = chained_traffic(fleet, host, tmp_path)
    assert not pinged, "the firewall let ICMP through"
    assert counters == {DROPPED_PORT: 0, PASSED_PORT: DATAGRAMS}, counters
    facts = succeeded(ad_hoc(LAYOUT.inventory, host.name, "xdpfleet.xdp.xdp_facts", {"interfaces": ["eth0"]},
                             env=ansible_env()))["ansible_facts"]["xdp"]["interfaces"]["eth0"]
    assert facts["hook"]["mechanism"] == "chained"
    assert [(item["place"], item["name"], item["prog_id"]) for item in facts["hook"]["programs"]] == [
        ("root", "xdpfleet_fw", root["prog_id"]), ("chained", "xt_filter", chained["prog_id"])]
    assert facts["counted_by"]["prog_id"] == root["prog_id"] and facts["stats"]["drop"]["packets"] >= 3

    detached = succeeded(module(host, interface="eth0", hook="chained", state="detached"))
    assert detached["changed"] and chained_prog_id(host) is None
    assert not [pin for pin in kernel_state(host)["pins"] if pin.startswith(CHAINED_PIN_DIR + "/")]
    counters, pinged = chained_traffic(fleet, host, tmp_path)
    assert not pinged and counters == {DROPPED_PORT: DATAGRAMS, PASSED_PORT: DATAGRAMS}, counters
    assert not succeeded(module(host, interface="eth0", hook="chained", state="detached"))["changed"]


LOCK_HOLD = 12.0


def test_a_run_waits_for_the_host_lock(host):
    """While another run holds /run/xdpfleet/eth0.lock, the module loads and attaches nothing."""
    holder = subprocess.Popen(["nsenter", "-t", str(host.pid), "--mount", "--", "sh", "-c",
                               "mkdir -p /run/xdpfleet && exec flock /run/xdpfleet/eth0.lock sleep %s" % LOCK_HOLD])
    released = time.time() + LOCK_HOLD
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(module, host, interface="eth0", src=PORTS_SRC)
        time.sleep(LOCK_HOLD - 1)
        assert kernel_state(host)["xdp"] is None and not run.done()
        holder.wait()
        result = succeeded(run.result())
    assert result["changed"] and kernel_state(host)["xdp"]["prog"]["id"] == result["prog_id"]
    shown = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(result["prog_id"])],
                                      capture_output=True, text=True, check=True).stdout)
    assert shown["loaded_at"] >= int(released) - 1
