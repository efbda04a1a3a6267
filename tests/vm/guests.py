"""Boot, find and stop qemu guests of one VM lab: each a copy-on-write overlay of the image, a
virtio-net NIC on a tap joined to the lab bridge, an address of the lab's /24."""

import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko
import yaml
from pyroute2 import IPRoute

from tests.lab import links
from tests.lab.fleet import Lab
from tests.lab.layout import Layout

from . import image as images

STATE_ROOT = Path("/var/lib/xdpfleet-vm")
MEMORY_MB = 768
BOOT_WAIT = 240.0
KVM_PROBE_SECONDS = 10
# The x86-64 baseline: with "max" glibc and Python pick AVX code paths that TCG emulates slowly.
TCG_CPU = "qemu64"
SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"


@dataclass(frozen=True)
class Guest:
    layout: Layout
    index: int

    @property
    def name(self) -> str:
        return self.layout.host_name(self.index)

    @property
    def address(self) -> str:
        return self.layout.host_address(self.index)

    @property
    def tap(self) -> str:
        return f"{self.layout.prefix}-t{self.index}"

    @property
    def mac(self) -> str:
        return "52:54:" + ":".join(f"{int(octet):02x}" for octet in self.address.split("."))

    @property
    def directory(self) -> Path:
        return STATE_ROOT / self.layout.prefix / self.name

    @property
    def pid_file(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def console(self) -> Path:
        return self.directory / "console.log"

    def pid(self):
        """The qemu process of this guest, None when it is not running."""
        try:
            pid = int(self.pid_file.read_text())
            running = f"guest={self.name}," in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        except (FileNotFoundError, ValueError):
            return None
        return pid if running else None


def state_dir(layout: Layout) -> Path:
    return STATE_ROOT / layout.prefix


def inventory_path(layout: Layout) -> Path:
    return state_dir(layout) / "hosts.yml"


@contextmanager
def _locked(layout: Layout):
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / f"{layout.prefix}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _kvm_boots(image: images.Image) -> bool:
    """Whether a kernel really runs under KVM here: it must reach its panic for want of a root
    filesystem (and exit, -no-reboot) within seconds. /dev/kvm existing is not enough."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-display", "none",
            "-no-reboot", "-serial", "stdio", "-kernel", str(image.kernel), "-append", "console=ttyS0 panic=-1"]
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=KVM_PROBE_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return False
    return "Kernel panic" in run.stdout


def accelerator(image: images.Image) -> str:
    """kvm when the probe boots, else tcg; the answer is kept for the rest of this machine's boot."""
    probe = images.CACHE / "accelerator.json"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    if probe.exists() and json.loads(probe.read_text()).get("boot_id") == boot_id:
        return json.loads(probe.read_text())["accelerator"]
    found = "kvm" if _kvm_boots(image) else "tcg"
    probe.write_text(json.dumps({"boot_id": boot_id, "accelerator": found}) + "\n")
    return found


def _ensure_tap(guest: Guest) -> None:
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=guest.tap):
            ipr.link("add", ifname=guest.tap, kind="tuntap", mode="tap")
        index = ipr.link_lookup(ifname=guest.tap)[0]
        ipr.link("set", index=index, master=ipr.link_lookup(ifname=guest.layout.bridge)[0], state="up")


def _kernel_cmdline(guest: Guest) -> str:
    # No PS/2 probing and no nested-virtualization modules: seconds each under TCG. tsc=reliable: on a
    # loaded host the clocksource watchdog otherwise moves the guest to the HPET, whose every read is
    # an emulated MMIO access. No fsck: every boot starts from a fresh overlay of a fresh filesystem.
    return (f"root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet systemd.show_status=0 i8042.noaux i8042.nokbd "
            f"modprobe.blacklist=kvm,kvm_amd,kvm_intel tsc=reliable fsck.mode=skip "
            f"systemd.hostname={guest.name} xdpfleet.address={guest.address}/24")


def _qemu_argv(guest: Guest, image: images.Image, accel: str) -> list[str]:
    return ["qemu-system-x86_64", "-name", f"guest={guest.name},debug-threads=on",
            "-accel", accel, "-cpu", "host" if accel == "kvm" else TCG_CPU, "-smp", "1", "-m", str(MEMORY_MB),
            "-nodefaults", "-display", "none", "-daemonize", "-pidfile", str(guest.pid_file),
            "-serial", f"file:{guest.console}",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", _kernel_cmdline(guest),
            "-drive", f"file={guest.directory / 'overlay.qcow2'},if=virtio,format=qcow2,cache=unsafe",
            "-netdev", f"tap,id=net0,ifname={guest.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={guest.mac}"]


def _start(guest: Guest, image: images.Image, accel: str) -> None:
    shutil.rmtree(guest.directory, ignore_errors=True)
    guest.directory.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.rootfs),
                    str(guest.directory / "overlay.qcow2")], check=True)
    _ensure_tap(guest)
    subprocess.run(_qemu_argv(guest, image, accel), check=True)


def _host_key(image: images.Image) -> paramiko.PKey:
    blob = image.host_key.read_text().split()[1]  # "ssh-ed25519 <base64> comment"
    return paramiko.Ed25519Key(data=base64.b64decode(blob))


def connect(guest: Guest, image: images.Image, wait: float = BOOT_WAIT) -> paramiko.SSHClient:
    """Root over SSH with the image's key, retrying until sshd answers; the host key must be the image's."""
    deadline = time.monotonic() + wait
    host_key = _host_key(image)
    while True:
        client = paramiko.SSHClient()
        client.get_host_keys().add(guest.address, host_key.get_name(), host_key)
        try:
            client.connect(guest.address, username="root", key_filename=str(images.ssh_key()),
                           look_for_keys=False, allow_agent=False, timeout=5, banner_timeout=10, auth_timeout=10)
            return client
        except (paramiko.SSHException, OSError, EOFError):  # EOFError: sshd closed the handshake (still starting)
            client.close()
            if time.monotonic() > deadline or guest.pid() is None:
                raise RuntimeError(f"{guest.name}: no SSH after {wait:.0f} s; console: {guest.console}")
            time.sleep(0.5)


def run(guest: Guest, image: images.Image, command: str, timeout: float = 60,
        wait: float = BOOT_WAIT) -> tuple[int, str, str]:
    client = connect(guest, image, wait)
    try:
        stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        out, err = stdout.read().decode(), stderr.read().decode()
        return stdout.channel.recv_exit_status(), out, err
    finally:
        client.close()


def _wait_ready(guest: Guest, image: images.Image, wait: float = BOOT_WAIT) -> float:
    started = time.monotonic()
    rc, out, err = run(guest, image, "hostname", wait=wait)
    if (rc, out.strip()) != (0, guest.name):
        raise RuntimeError(f"{guest.name}: `hostname` gave rc={rc} out={out!r} err={err!r}")
    return time.monotonic() - started


def _ensure_lab_network(layout: Layout) -> None:
    """The lab's bridge and client namespace, without namespace hosts: the guests take their place."""
    links.ensure_bridge(layout.bridge, layout.bridge_address)
    peer = layout.peer_ifname(layout.client_name)
    if layout.client_name not in links.namespaces() or links.link_index(peer) is None:
        links.delete_link(peer)
        links.remove_namespace(layout.client_name)
        links.create_node_namespace(layout.client_name, layout.client_address, layout.bridge, peer)


def _write_inventory(layout: Layout, guests: list[Guest], accel: str, kernel: str) -> None:
    group = {
        "hosts": {guest.name: {"ansible_host": guest.address, "xdp_interfaces": ["eth0"]} for guest in guests},
        "vars": {"ansible_user": "root", "ansible_connection": "ssh",
                 "ansible_ssh_private_key_file": str(images.ssh_key()), "ansible_ssh_common_args": SSH_ARGS,
                 "ansible_python_interpreter": "/usr/bin/python3", "vm_accelerator": accel,
                 "vm_kernel": kernel, "lab_client_netns": layout.client_name},
    }
    text = "# Written by `python -m tests.vm up`; do not edit.\n"
    inventory_path(layout).write_text(text + yaml.safe_dump({"all": {"children": {"vm": group}}}, sort_keys=False))


def _recorded(layout: Layout) -> list[Guest]:
    directory = state_dir(layout)
    found = [layout.host_index(path.name) for path in directory.iterdir()] if directory.is_dir() else []
    return sorted((Guest(layout, index) for index in found if index), key=lambda guest: guest.index)


def _stop(guest: Guest) -> None:
    pid = guest.pid()
    if pid:
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
    links.delete_link(guest.tap)
    shutil.rmtree(guest.directory, ignore_errors=True)


def up(layout: Layout, count: int) -> dict:
    """Exactly `count` running guests: running ones are kept, missing ones booted, extra ones stopped."""
    with _locked(layout):
        image = images.ensure()
        accel = accelerator(image)
        _ensure_lab_network(layout)
        wanted = [Guest(layout, index) for index in range(1, count + 1)]
        for guest in _recorded(layout):
            if guest not in wanted:
                _stop(guest)
        started = time.monotonic()
        booting = [guest for guest in wanted if guest.pid() is None]
        for guest in booting:
            _stop(guest)
            _start(guest, image, accel)
        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            list(pool.map(lambda guest: _wait_ready(guest, image), wanted))
        kernel = images.manifest(image)["kernel"]
        _write_inventory(layout, wanted, accel, kernel)
        return {"guests": [guest.name for guest in wanted], "booted": len(booting), "accelerator": accel,
                "kernel": kernel, "boot_seconds": round(time.monotonic() - started, 1),
                "inventory": str(inventory_path(layout))}


def down(layout: Layout) -> None:
    """Stop every guest, remove its tap and overlay, then the lab's client namespace and bridge."""
    with _locked(layout):
        for guest in _recorded(layout):
            _stop(guest)
        shutil.rmtree(state_dir(layout), ignore_errors=True)
    Lab.load(layout).down()


def status(layout: Layout) -> dict[str, str]:
    image = images.current()
    states = {}
    for guest in _recorded(layout):
        try:
            states[guest.name] = "answers" if guest.pid() and _wait_ready(guest, image, wait=3) >= 0 else "stopped"
        except RuntimeError:
            states[guest.name] = "DOWN"
    return states
