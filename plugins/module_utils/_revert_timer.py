# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The timer of a confirmed change's revert (_fw_confirm): a transient systemd timer where systemd runs, else a
process in a session of its own, either running Python on code kept on disk at the deadline (TIMER_CODE, which
calls _fw_confirm.when_due)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import signal
import sys
import time

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors, _hostfs

CODE_DIR = "/var/lib/xdpfleet"
SYSTEMD_RUNTIME = "/run/systemd/system"
TRANSIENT_UNITS = "/run/systemd/transient"
MAX_DESCRIPTORS = 65536  # closed in a child before exec, beyond stdio
UNIT_PREFIX = "xdpfleet-revert-"
# this file is ansible_collections/xdpfleet/xdp/plugins/module_utils/_revert_timer.py below its sys.path entry
PACKAGE_DEPTH = 6
# The timer's command: python3 -c TIMER_CODE <sys.path entry of the collection> <order as JSON>
TIMER_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_confirm, _fw_run; "
              "_fw_confirm.when_due(_fw_run.run, sys.argv[2])")


class TimerError(_errors.XdpfleetError):
    pass


def code_root(interface, code_dir=CODE_DIR):
    """(Where the timer imports this collection's module_utils from, the copy made for it or None): the directory
    on sys.path they were imported from, or a copy of the zip they came in (Ansible's payload, which is deleted when
    the module exits)."""
    root = os.path.abspath(__file__)
    for _level in range(PACKAGE_DEPTH):
        root = os.path.dirname(root)
    if os.path.isdir(root):
        return root, None
    copy = os.path.join(code_dir, "%s.revert.zip" % interface)
    if not os.path.isdir(code_dir):
        os.makedirs(code_dir, 0o755)
    with open(root, "rb") as handle:
        _hostfs.write_atomically(copy, handle.read(), 0o600)
    return copy, copy


def timer_kind():
    return "systemd" if os.path.isdir(SYSTEMD_RUNTIME) and shutil.which("systemd-run") else "process"


def unit_name(interface, token):
    safe = re.sub(r"[^A-Za-z0-9_.-]", lambda match: "_%02x" % ord(match.group()), interface)
    return "%s%s-%s" % (UNIT_PREFIX, safe, token[:8])


def start_timer(interface, token, deadline, root, order):
    """Starts the timer that runs when_due(order) at the deadline; returns how it runs, for the record: a transient
    systemd timer where systemd runs, else a detached process (see _detached)."""
    argv = [sys.executable, "-c", TIMER_CODE, root, json.dumps(order, sort_keys=True)]
    if timer_kind() == "systemd":
        unit = unit_name(interface, token)
        status, errors = _command(["systemd-run", "--quiet", "--collect", "--unit", unit, "--description",
                                   "xdpfleet: revert the unconfirmed rule change on %s" % interface,
                                   "--on-active", "%dms" % max(1, int((deadline - time.time()) * 1000)),
                                   "--timer-property", "AccuracySec=100ms",
                                   "--timer-property", "RemainAfterElapse=no"] + argv)
        if status != 0:
            raise TimerError("cannot arm the revert of %s: systemd-run failed: %s" % (interface, errors.strip()))
        return {"kind": "systemd", "unit": unit}
    return {"kind": "process", "pid": _detached(argv)}


def stop_timer(record):
    """Stops the timer of an armed record (firing after this would change nothing: the record no longer holds its
    token)."""
    timer = record["timer"]
    if timer["kind"] == "systemd":
        _command(["systemctl", "stop", timer["unit"] + ".timer", timer["unit"] + ".service"])
    elif _is_timer_process(timer["pid"], record["token"]):
        try:
            os.kill(timer["pid"], signal.SIGTERM)
        except OSError:
            pass  # it ended meanwhile


# These module_utils also run where AnsibleModule.run_command is not at hand (the timer, the boot-time restore),
# and the timer process must outlive the module: processes are started with fork and exec.


def _detached(argv):
    """Starts argv as a daemon (double fork: a session of its own, a child of init, SIGHUP ignored, stdio on
    /dev/null, no descriptor of the module's inherited), so that it outlives the module and the SSH session: ansible
    waits for the session's stdout and stderr to be closed by every process holding them. It stays in this host's
    namespaces. Returns its pid."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            daemon = os.fork()
            if daemon == 0:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                os.chdir("/")
                _exec(argv)
            os.write(write_end, str(daemon).encode("ascii"))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reading:
        pid = int(reading.read() or 0)
    os.waitpid(child, 0)
    if not pid:
        raise TimerError("cannot start the revert timer process")
    return pid


def _command(argv):
    """(exit status, standard error) of argv, run to its end."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        _exec(argv, write_end)
    os.close(write_end)
    with os.fdopen(read_end) as reading:
        errors = reading.read()
    status = os.waitpid(child, 0)[1]
    return (os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)), errors


def _exec(argv, stderr=None):
    """In a child: argv with stdin and stdout (and stderr, unless given) on /dev/null, every other descriptor closed
    and a minimal environment; never returns."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(null if stderr is None else stderr, 2)
        os.closerange(3, MAX_DESCRIPTORS)
        os.execvpe(argv[0], argv, {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"})
    finally:
        os._exit(127)


def _is_timer_process(pid, token):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return token.encode("ascii") in handle.read()
    except IOError:
        return False


def timer_running(timer, token):
    """Whether the timer is still to fire: the transient unit files exist while systemd has the units loaded."""
    if "unit" in timer:
        return any(os.path.exists(os.path.join(TRANSIENT_UNITS, timer["unit"] + suffix))
                   for suffix in (".timer", ".service"))
    if "pid" in timer:
        return _is_timer_process(timer["pid"], token)
    return None


def timer_text(timer):
    if "unit" in timer:
        return "systemd timer %s.timer" % timer["unit"]
    if "pid" in timer:
        return "process %d" % timer["pid"]
    return "a %s timer" % timer["kind"]
