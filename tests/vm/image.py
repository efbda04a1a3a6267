"""The guest image: Debian bookworm from Debian packages only, built by debootstrap, cached by a hash
of its inputs under /var/cache/xdpfleet-vm (outside the repository), so only a change rebuilds it."""

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("XDPFLEET_VM_CACHE", "/var/cache/xdpfleet-vm"))
# Bump when the build steps below change in a way the other inputs do not show.
BUILD_VERSION = 2
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("systemd", "systemd-sysv", "udev", "openssh-server", "python3", "python3-apt", "libbpf1",
            "bpftool", "iproute2", "python3-pyroute2", "procps", "linux-image-amd64", "libxdp1", "xdp-tools")
IMAGE_SIZE = "3G"
GUEST_FILES = Path(__file__).parent / "guest"
# Timers and services a throwaway test guest does not need; under TCG every unit costs boot time.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service",
                "fstrim.timer", "systemd-timesyncd.service", "getty@tty1.service", "serial-getty@ttyS0.service",
                "systemd-networkd-wait-online.service", "systemd-update-utmp.service",
                "systemd-update-utmp-runlevel.service", "logrotate.timer", "man-db.timer", "dpkg-db-backup.timer",
                "getty-static.service", "systemd-binfmt.service", "dev-hugepages.mount", "dev-mqueue.mount",
                "sys-kernel-debug.mount", "sys-fs-fuse-connections.mount", "sys-kernel-config.mount",
                "systemd-journal-flush.service", "systemd-random-seed.service", "getty.target",
                "modprobe@dm_mod.service", "modprobe@efi_pstore.service", "modprobe@loop.service",
                "modprobe@configfs.service", "modprobe@fuse.service", "modprobe@drm.service",
                "kmod-static-nodes.service", "sys-kernel-tracing.mount", "systemd-remount-fs.service",
                "systemd-pstore.service", "systemd-firstboot.service", "systemd-machine-id-commit.service",
                "systemd-pcrphase.service", "systemd-pcrphase-sysinit.service", "systemd-repart.service",
                "systemd-sysusers.service", "proc-sys-fs-binfmt_misc.automount",
                "systemd-ask-password-console.path", "systemd-ask-password-wall.path")
# Generators run at every boot and every daemon-reload; a guest needs only the fstab one (bpffs).
MASKED_GENERATORS = ("systemd-cryptsetup-generator", "systemd-debug-generator", "systemd-getty-generator",
                     "systemd-gpt-auto-generator", "systemd-hibernate-resume-generator",
                     "systemd-integritysetup-generator", "systemd-rc-local-generator", "systemd-run-generator",
                     "systemd-system-update-generator", "systemd-sysv-generator", "systemd-veritysetup-generator")
# Guest files: path in the image -> (file under tests/vm/guest, mode).
INSTALLED_FILES = {
    "usr/local/sbin/xdpfleet-vm-net": ("xdpfleet-vm-net", 0o755),
    "etc/systemd/system/xdpfleet-vm-net.service": ("xdpfleet-vm-net.service", 0o644),
    "etc/ssh/sshd_config.d/xdpfleet-vm.conf": ("sshd.conf", 0o644),
    "etc/initramfs-tools/conf.d/xdpfleet-vm.conf": ("initramfs.conf", 0o644),
    "etc/initramfs-tools/modules": ("initramfs.modules", 0o644),
    "etc/fstab": ("fstab", 0o644),
    "etc/systemd/system/ssh.service.d/xdpfleet-vm.conf": ("ssh.service.conf", 0o644),
    "etc/systemd/system/systemd-udev-trigger.service.d/xdpfleet-vm.conf": ("udev-trigger.conf", 0o644),
    "etc/systemd/journald.conf.d/xdpfleet-vm.conf": ("journald.conf", 0o644),
    "usr/local/lib/python3.11/dist-packages/xdpfleet_zipimport_cache.py": ("zipimport_cache.py", 0o644),
    "usr/local/lib/python3.11/dist-packages/xdpfleet-zipimport-cache.pth": ("zipimport_cache.pth", 0o644),
}
SERVICES = ("xdpfleet-vm-net.service", "ssh.service")


@dataclass(frozen=True)
class Image:
    """A built image: the root filesystem and the kernel and initramfs to boot it with."""

    directory: Path

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.raw"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def host_key(self) -> Path:
        """The public SSH host key every guest of this image presents."""
        return self.directory / "ssh_host_ed25519_key.pub"

    @property
    def manifest(self) -> Path:
        return self.directory / "manifest.json"

    def is_complete(self) -> bool:
        return self.manifest.exists()


def ssh_key() -> Path:
    """The guests' root key, made once beside the images (its public half is an image input)."""
    key = CACHE / "id_ed25519"
    if not key.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xdpfleet-vm", "-f", str(key)],
                       check=True)
    return key


def _inputs() -> dict:
    guest_files = {name: (GUEST_FILES / source).read_text() for name, (source, mode) in INSTALLED_FILES.items()}
    return {"suite": SUITE, "mirror": MIRROR, "packages": PACKAGES, "size": IMAGE_SIZE,
            "masked": MASKED_UNITS, "generators": MASKED_GENERATORS, "services": SERVICES, "files": guest_files,
            "key": ssh_key().with_suffix(".pub").read_text(),
            "build": BUILD_VERSION}


def image_hash() -> str:
    return hashlib.sha256(json.dumps(_inputs(), sort_keys=True).encode()).hexdigest()[:16]


def current() -> Image:
    return Image(CACHE / f"image-{image_hash()}")


def _run(argv: list[str], **kwargs) -> None:
    subprocess.run(argv, check=True, **kwargs)


def _debootstrap(root: Path) -> None:
    """Two stages, so that the guest files (initramfs settings above all) are in place before the
    packages are configured: the kernel's initramfs is then built once, small. dpkg skips fsync
    during the build (the image is written in one piece afterwards)."""
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    _run(["debootstrap", "--foreign", "--variant=minbase", f"--include={','.join(PACKAGES)}",
          f"--cache-dir={debs}", SUITE, str(root), MIRROR], stdout=subprocess.DEVNULL)
    _install_guest_files(root)
    unsafe_io = root / "etc/dpkg/dpkg.cfg.d/xdpfleet-vm-build"
    unsafe_io.parent.mkdir(parents=True, exist_ok=True)
    unsafe_io.write_text("force-unsafe-io\n")
    _run(["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"], stdout=subprocess.DEVNULL)
    unsafe_io.unlink()


def _install_guest_files(root: Path) -> None:
    for name, (source, mode) in INSTALLED_FILES.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GUEST_FILES / source, target)
        target.chmod(mode)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(ssh_key().with_suffix(".pub").read_text())


def _configure_systemd(root: Path) -> None:
    units = root / "etc/systemd/system"
    for unit in MASKED_UNITS:
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    generators = root / "etc/systemd/system-generators"
    generators.mkdir(parents=True, exist_ok=True)
    for generator in MASKED_GENERATORS:
        (generators / generator).symlink_to("/dev/null")
    _run(["chroot", str(root), "systemctl", "enable", "--quiet", *SERVICES])
    # The hostname comes from the kernel command line (systemd.hostname=), one per guest.
    (root / "etc/hostname").unlink(missing_ok=True)


def _export_boot_files(root: Path, image: Image) -> None:
    boot = root / "boot"
    shutil.copyfile(max(boot.glob("vmlinuz-*")), image.kernel)
    shutil.copyfile(max(boot.glob("initrd.img-*")), image.initrd)
    shutil.copyfile(root / "etc/ssh/ssh_host_ed25519_key.pub", image.host_key)


def _make_filesystem(root: Path, image: Image) -> None:
    _run(["mkfs.ext4", "-q", "-L", "xdpfleet-vm", "-d", str(root), str(image.rootfs), IMAGE_SIZE],
         stdout=subprocess.DEVNULL)


def _build(image: Image) -> dict:
    started = time.monotonic()
    work = image.directory.with_name(image.directory.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    _debootstrap(root)
    _configure_systemd(root)
    _export_boot_files(root, Image(work))
    _make_filesystem(root, Image(work))
    kernel_release = max((root / "lib/modules").iterdir()).name
    shutil.rmtree(root)
    manifest = {"hash": image_hash(), "kernel": kernel_release, "packages": PACKAGES,
                "build_seconds": round(time.monotonic() - started, 1)}
    Image(work).manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(image.directory, ignore_errors=True)
    work.rename(image.directory)
    return manifest


def ensure() -> Image:
    """The image of the current inputs, built when it is not in the cache; older images are removed."""
    image = current()
    if not image.is_complete():
        _build(image)
    for stale in CACHE.glob("image-*"):
        if stale != image.directory:
            shutil.rmtree(stale, ignore_errors=True)
    return image


def manifest(image: Image) -> dict:
    return json.loads(image.manifest.read_text())
