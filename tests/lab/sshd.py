"""Per-host sshd inside the host's namespaces, and the paramiko side that talks to it."""

import base64
import subprocess
import time
from pathlib import Path

import paramiko

# Runs inside the host's fresh mount and UTS namespaces (already in its network namespace):
# private sysfs/bpffs/tmpfs mounts, the hostname, then sshd becomes the anchor process itself.
ANCHOR_SCRIPT = """set -e
if mountpoint -q /run/netns; then umount -R /run/netns; fi
mount -t sysfs sysfs /sys
mount -t bpf bpf /sys/fs/bpf
for dir in /run /var/lib/xdpfleet /etc/xdpfleet; do
    mkdir -p "$dir"
    mount -t tmpfs -o mode=0755 tmpfs "$dir"
done
mkdir -m 0755 /run/sshd
hostname "$1"
exec /usr/sbin/sshd -D -e -f "$2"
"""

SSHD_CONFIG = """ListenAddress {address}
HostKey {host_key}
PidFile none
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {authorized_keys}
UseDNS no
PrintMotd no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
"""


def ensure_keypair(path: Path) -> None:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                       check=True)


def write_config(host_dir: Path, address: str, authorized_keys: Path) -> Path:
    host_key = host_dir / "ssh_host_ed25519_key"
    ensure_keypair(host_key)
    config = host_dir / "sshd_config"
    config.write_text(SSHD_CONFIG.format(address=address, host_key=host_key, authorized_keys=authorized_keys))
    return config


def start_anchor(host_dir: Path, netns: str, hostname: str, config: Path) -> int:
    """Start sshd in netns + new mount/UTS namespaces; nsenter, unshare and sh all exec, so the pid is sshd's."""
    command = ["nsenter", f"--net=/run/netns/{netns}",
               "unshare", "--mount", "--uts", "--propagation", "private",
               "sh", "-c", ANCHOR_SCRIPT, "anchor", hostname, str(config)]
    with open(host_dir / "anchor.log", "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process.pid


def host_public_key(host_dir: Path) -> paramiko.PKey:
    blob = (host_dir / "ssh_host_ed25519_key.pub").read_text().split()[1]  # "ssh-ed25519 <base64> comment"
    return paramiko.Ed25519Key(data=base64.b64decode(blob))


def connect(address: str, client_key: Path, host_key: paramiko.PKey, timeout: float) -> paramiko.SSHClient:
    """Connect as root, retrying while sshd is not listening or answering yet; the host key must be the lab's."""
    deadline = time.monotonic() + timeout
    while True:
        client = paramiko.SSHClient()
        client.get_host_keys().add(address, host_key.get_name(), host_key)
        try:
            client.connect(address, username="root", key_filename=str(client_key), look_for_keys=False,
                           allow_agent=False, timeout=5, banner_timeout=5, auth_timeout=5)
            return client
        except (paramiko.ssh_exception.NoValidConnectionsError, paramiko.SSHException, OSError, EOFError):
            # a busy sshd can also reset, close (paramiko's EOFError) or stall a handshake: retry that too
            # while time is left
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def execute(client: paramiko.SSHClient, command: str, timeout: float) -> tuple[int, str, str]:
    stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err
