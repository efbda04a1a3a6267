# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's filesystem side of xdpfleet: bpffs, pin directories, the host lock, atomic file writes, file digests.

Nothing here needs Ansible; every function works on plain paths.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import tempfile

from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError

BPFFS_ROOT = "/sys/fs/bpf"
BPFFS_TYPE = "bpf"
PIN_ROOT = BPFFS_ROOT + "/xdpfleet"
TRACEFS_ROOT = "/sys/kernel/tracing"
TRACEFS_TYPE = "tracefs"
LOCK_DIR = "/run/xdpfleet"
PIN_DIR_MODE = 0o700


class HostfsError(XdpfleetError):
    pass


def default_pin_dir(interface):
    return "%s/%s" % (PIN_ROOT, interface)


def default_tracing_pin_dir(name):
    """Where bpf_program pins the links and maps of the set of tracing programs called name."""
    return "%s/tracing/%s" % (PIN_ROOT, name)


def mounts():
    """{device "major:minor": filesystem type} of this mount namespace's mounts."""
    table = {}
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            table[fields[2]] = fields[fields.index("-") + 1]
    return table


def filesystem_of(path):
    """The filesystem type holding path (or where path would be created).

    Found by the device of the nearest existing path, not by mount point: a point can be listed
    under a mount that a later mount hides (sysfs mounted again over /sys hides the old
    /sys/fs/bpf), and only the device tells which mount a path lookup really reaches.
    """
    current = os.path.abspath(path)
    while not os.path.exists(current):
        current = os.path.dirname(current)
    device = os.stat(current).st_dev
    return mounts().get("%d:%d" % (os.major(device), os.minor(device)))


def bpffs_mounted():
    return filesystem_of(BPFFS_ROOT) == BPFFS_TYPE


def _mount_once(fs_type, target, options):
    """Mounts a filesystem of fs_type at target when it is not there; returns True when it mounted."""
    if filesystem_of(target) == fs_type:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(fs_type.encode(), target.encode(), fs_type.encode(), 0, options) != 0:
        error = ctypes.get_errno()
        raise HostfsError("cannot mount the %s filesystem at %s: %s" % (fs_type, target, os.strerror(error)))
    return True


def mount_bpffs():
    """Mounts the bpf filesystem at /sys/fs/bpf when it is not there; returns True when it mounted."""
    return _mount_once(BPFFS_TYPE, BPFFS_ROOT, b"mode=0700")


def mount_tracefs():
    """Mounts tracefs at /sys/kernel/tracing when it is not there (libbpf finds tracepoints' ids in it)."""
    return _mount_once(TRACEFS_TYPE, TRACEFS_ROOT, None)


def check_pin_dir(pin_dir):
    """Refuses a pin directory that is not (or would not be, once bpffs is mounted) on bpffs."""
    if not os.path.isabs(pin_dir):
        raise HostfsError("pin_dir %s must be an absolute path" % pin_dir)
    if filesystem_of(pin_dir) == BPFFS_TYPE:
        return
    if (pin_dir + "/").startswith(BPFFS_ROOT + "/") and not bpffs_mounted():
        return  # bpffs is mounted there before anything is pinned
    raise HostfsError("pin_dir %s is not on a bpf filesystem (bpffs); use a directory under %s"
                      % (pin_dir, BPFFS_ROOT))


def make_pin_dir(pin_dir):
    """Creates pin_dir and missing parents with mode 0700."""
    missing = []
    current = pin_dir
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    for directory in reversed(missing):
        os.mkdir(directory, PIN_DIR_MODE)
    os.chmod(pin_dir, PIN_DIR_MODE)


def pin_path(pin_dir, name):
    return os.path.join(pin_dir, name)


def unpin(pin_dir, name):
    """Removes one pin; returns False when it was not there."""
    try:
        os.unlink(pin_path(pin_dir, name))
    except OSError as error:
        if error.errno != errno.ENOENT:
            raise
        return False
    return True


def pinned_names(pin_dir):
    try:
        return sorted(name for name in os.listdir(pin_dir) if not os.path.isdir(pin_path(pin_dir, name)))
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return []
        raise


def remove_pin_dir_if_empty(pin_dir):
    """Removes pin_dir, and the xdpfleet root above it, when they hold nothing any more."""
    for directory in (pin_dir, PIN_ROOT):
        try:
            os.rmdir(directory)
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
                raise


@contextlib.contextmanager
def host_lock(interface, lock_dir=LOCK_DIR):
    """Serialises xdpfleet runs on one interface of this host (flock, released on exit or crash)."""
    if not os.path.isdir(lock_dir):
        os.makedirs(lock_dir, 0o755)
    descriptor = os.open(os.path.join(lock_dir, "%s.lock" % interface), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def write_atomically(path, text, mode=0o644):
    """Writes text (str, or bytes) to path through a temporary file in the same directory, renamed over path:
    readers see the old file or the new one, and after a crash the old one or the new one (file and directory
    synced)."""
    directory = os.path.dirname(path)
    descriptor, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb" if isinstance(text, bytes) else "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    directory_descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_descriptor)
    finally:
        os.close(directory_descriptor)


def file_sha256(path):
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
