"""The lab fleet: hosts (netns + UTS + mount namespaces running sshd) and a client namespace on a bridge."""

import fcntl
import shutil
import subprocess
import threading
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from . import inventory, links, processes, sshd
from .layout import HOST_IFNAME, MAX_HOSTS, Layout, users_path

Result = namedtuple("Result", "rc out err")
SSH_WAIT = 30.0
STATUS_WAIT = 15.0  # a whole SSH retry budget: one lost SYN or a stalled handshake is not "down"


def _capture(argv: list[str], timeout: float) -> Result:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    return Result(done.returncode, done.stdout, done.stderr)


def _parallel(function, items) -> list:
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(function, items))


@dataclass(eq=False)
class Client:
    """A bare network namespace on the lab bridge; it sends traffic, nothing manages it."""

    name: str
    address: str
    netns: str
    ifname: str = HOST_IFNAME

    def run(self, command: str, timeout: float = 60) -> Result:
        return _capture(["ip", "netns", "exec", self.netns, "sh", "-c", command], timeout)


@dataclass(eq=False)
class Host(Client):
    """A lab host; `pid` is its sshd, the process that anchors its mount and UTS namespaces."""

    pid: int = 0
    layout: Layout = field(default_factory=Layout, repr=False)
    _ssh: paramiko.SSHClient | None = field(default=None, repr=False)
    _ssh_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state_dir(self) -> Path:
        return self.layout.host_dir(self.name)

    @property
    def sshd_config(self) -> Path:
        return self.state_dir / "sshd_config"

    def run(self, command: str, timeout: float = 60) -> Result:
        """Run in the host's namespaces without SSH."""
        argv = ["nsenter", "-t", str(self.pid), "--net", "--mount", "--uts", "--", "sh", "-c", command]
        return _capture(argv, timeout)

    def ssh(self, command: str, timeout: float = 60) -> Result:
        return Result(*sshd.execute(self.connect(), command, timeout))

    def connect(self, wait: float = SSH_WAIT) -> paramiko.SSHClient:
        """The cached SSH connection, (re)opened when needed, waiting up to `wait` s for sshd."""
        with self._ssh_lock:
            transport = self._ssh.get_transport() if self._ssh else None
            if not (transport and transport.is_active()):
                host_key = sshd.host_public_key(self.state_dir)
                self._ssh = sshd.connect(self.address, self.layout.client_key, host_key, wait)
            return self._ssh

    def ssh_problem(self) -> str:
        """What keeps sshd from answering `hostname` with the host's own name; "" when it does."""
        try:
            self.connect(wait=STATUS_WAIT)
            rc, out, err = self.ssh("hostname", timeout=STATUS_WAIT)
        except (OSError, paramiko.SSHException, EOFError) as error:
            return f"{type(error).__name__}: {error}"
        return "" if (rc, out, err) == (0, f"{self.name}\n", "") else f"hostname: rc={rc} out={out!r} err={err!r}"

    def is_running(self) -> bool:
        try:
            return (str(self.sshd_config) in processes.cmdline(self.pid)
                    and processes.namespace_id(f"/proc/{self.pid}/ns/net")
                    == processes.namespace_id(f"/run/netns/{self.netns}"))
        except FileNotFoundError:
            return False

    def close(self) -> None:
        if self._ssh:
            self._ssh.close()


def _host(layout: Layout, index: int, pid: int = 0) -> Host:
    name = layout.host_name(index)
    return Host(name=name, address=layout.host_address(index), netns=name, pid=pid, layout=layout)


def _client(layout: Layout) -> Client:
    return Client(name=layout.client_name, address=layout.client_address, netns=layout.client_name)


def _recorded_hosts(layout: Layout) -> list[Host]:
    pid_files = layout.state_dir.glob("*/anchor.pid") if layout.state_dir.is_dir() else []
    found = [(layout.host_index(pid_file.parent.name), pid_file) for pid_file in pid_files]
    return sorted((_host(layout, index, int(pid_file.read_text())) for index, pid_file in found if index),
                  key=lambda host: layout.host_index(host.name))


def _host_names(layout: Layout) -> set[str]:
    """Hosts of this lab that exist in any form: a namespace, or a state dir with an anchor pid."""
    in_kernel = {name for name in links.namespaces() if layout.host_index(name)}
    return in_kernel | {host.name for host in _recorded_hosts(layout)}


@contextmanager
def _locked(layout: Layout):
    """One `up`/`down` at a time per lab, also across pytest-xdist workers."""
    layout.lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(layout.lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _lock_alone(lock_file) -> bool:
    """Exclusive hold of a users file, if no one else holds it."""
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def in_use(prefix: str) -> bool:
    """Whether a test, in any process, is using the lab of this prefix through `Lab.running`."""
    path = users_path(prefix)
    if not path.exists():
        return False
    with open(path, "a") as users:
        return not _lock_alone(users)


def _remove_nodes(layout: Layout, names) -> None:
    """End every process in these namespaces, then delete their veths and namespaces."""
    names = set(names)
    present = [name for name in links.namespaces() if name in names]
    namespace_ids = {processes.namespace_id(f"/run/netns/{name}") for name in present}
    anchors = [host.pid for host in _recorded_hosts(layout)
               if host.name in names and str(host.sshd_config) in processes.cmdline(host.pid)]
    processes.kill_all(set(processes.pids_in(namespace_ids)) | set(anchors))
    for name in names:
        links.delete_link(layout.peer_ifname(name))
        links.remove_namespace(name)
        if name != layout.client_name:
            shutil.rmtree(layout.host_dir(name), ignore_errors=True)


def _add_node(layout: Layout, node: Client) -> None:
    links.create_node_namespace(node.netns, node.address, layout.bridge, layout.peer_ifname(node.netns))


def _ensure_client(layout: Layout) -> Client:
    client = _client(layout)
    if client.netns not in links.namespaces() or links.link_index(layout.peer_ifname(client.netns)) is None:
        _remove_nodes(layout, [client.name])
        _add_node(layout, client)
    return client


def _ensure_host(layout: Layout, index: int) -> Host:
    host = _host(layout, index)
    pid_file = host.state_dir / "anchor.pid"
    if pid_file.exists():
        host.pid = int(pid_file.read_text())
        if host.is_running():
            return host
    _remove_nodes(layout, [host.name])
    _add_node(layout, host)
    host.state_dir.mkdir(mode=0o700)
    config = sshd.write_config(host.state_dir, host.address, layout.authorized_keys)
    host.pid = sshd.start_anchor(host.state_dir, host.netns, host.name, config)
    pid_file.write_text(f"{host.pid}\n")
    return host


def _check_hostname(host: Host) -> None:
    rc, out, err = host.ssh("hostname")
    if (rc, out.strip()) != (0, host.name):
        raise RuntimeError(f"{host.name}: `hostname` over SSH gave rc={rc} out={out!r} err={err!r}")


class Lab:
    """A lab fleet. `Lab.up(n)` builds or adjusts it, `Lab.load()` attaches to what is running."""

    def __init__(self, layout: Layout, hosts: list[Host], client: Client | None):
        self.layout = layout
        self.hosts = hosts
        self.client = client

    @property
    def inventory(self) -> Path:
        return self.layout.inventory

    @classmethod
    def load(cls, layout: Layout = Layout()) -> "Lab":
        client = _client(layout) if layout.client_name in links.namespaces() else None
        return cls(layout, _recorded_hosts(layout), client)

    @classmethod
    def up(cls, count: int, layout: Layout = Layout()) -> "Lab":
        """Exactly `count` hosts: running ones are reused, missing ones added, extra ones removed."""
        with _locked(layout):
            return cls._up(count, layout)

    @classmethod
    @contextmanager
    def running(cls, minimum: int, layout: Layout = Layout()):
        """The lab with at least `minimum` healthy hosts for the length of a with block (a test fixture's life).
        A lab that was running before is used as it is and left running; one that tests built, or had to
        rebuild, is taken down by the last with block using it, in whatever process, also when the block or
        the build failed."""
        users_path(layout.prefix).parent.mkdir(parents=True, exist_ok=True)
        with open(users_path(layout.prefix), "a") as users:
            fcntl.flock(users, fcntl.LOCK_SH)
            lab = None
            try:
                lab = cls._ensure(minimum, layout)
                yield lab
            finally:
                for host in lab.hosts if lab else []:
                    host.close()
                fcntl.flock(users, fcntl.LOCK_UN)
                if layout.built_by_tests.exists() and _lock_alone(users):
                    cls.load(layout).down()

    @classmethod
    def _ensure(cls, minimum: int, layout: Layout) -> "Lab":
        """The running lab if it has at least `minimum` healthy hosts, else `_up(minimum)`, marked as built by tests."""
        with _locked(layout):
            lab = cls.load(layout)
            if lab.client and len(lab.hosts) >= minimum and all(host.is_running() for host in lab.hosts):
                inventory.write(layout.inventory, lab.hosts, layout)  # this checkout may not have it yet
                return lab
            layout.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            layout.built_by_tests.touch()
            return cls._up(minimum, layout)

    @classmethod
    def _up(cls, count: int, layout: Layout) -> "Lab":
        if not 1 <= count <= MAX_HOSTS:
            raise ValueError(f"hosts must be 1..{MAX_HOSTS}: {count}")
        layout.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        sshd.ensure_keypair(layout.client_key)
        layout.authorized_keys.write_text(layout.client_key.with_suffix(".pub").read_text())
        links.ensure_bridge(layout.bridge, layout.bridge_address)
        client = _ensure_client(layout)
        hosts = [_ensure_host(layout, index) for index in range(1, count + 1)]
        _remove_nodes(layout, _host_names(layout) - {host.name for host in hosts})
        _parallel(_check_hostname, hosts)
        inventory.write(layout.inventory, hosts, layout)
        return cls(layout, hosts, client)

    def down(self) -> None:
        """Remove every namespace, veth, mount and process of this lab, the bridge, state and inventory."""
        with _locked(self.layout):
            for host in self.hosts:
                host.close()
            _remove_nodes(self.layout, _host_names(self.layout) | {self.layout.client_name})
            links.delete_link(self.layout.bridge)
            inventory.remove(self.layout.inventory)
            shutil.rmtree(self.layout.state_dir, ignore_errors=True)
            self.hosts, self.client = [], None

    def status(self) -> dict[str, str]:
        """Per host, what keeps its sshd from answering with the host's own hostname ("" when it answers)."""
        return dict(zip((host.name for host in self.hosts), _parallel(Host.ssh_problem, self.hosts)))

    def run_parallel(self, command: str, hosts=None, via: str = "ssh", timeout: float = 60) -> dict[str, Result]:
        """Run `command` on every host (or `hosts`) at once, over SSH or with `via="nsenter"`."""
        hosts = self.hosts if hosts is None else hosts
        runners = {"ssh": Host.ssh, "nsenter": Host.run}
        results = _parallel(lambda host: runners[via](host, command, timeout), hosts)
        return {host.name: result for host, result in zip(hosts, results)}
