# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Confirmed changes: a rule change applied with confirm_within arms, on the host, a revert to the rule set before
it, which fires at the deadline unless a later task confirms the change.

The record /etc/xdpfleet/<interface>.confirm.json says what is armed: a random token, the deadline, the desired
state to go back to (<interface>.revert.json, saved before the first unconfirmed change) and the timer: a transient
systemd timer where systemd runs, else a process in a session of its own. Either runs Python on code kept on disk
(when_due), which has _fw_run.run apply the saved state under the host lock only while the record holds the
timer's token, and then marks the record reverted: a revert that fires twice, or after a confirmation, changes
nothing, and a confirmation after it fails saying why. A change still unconfirmed when the host restarts is
reverted at boot (_restore). Whatever its state (armed, reverted, confirmed), the record keeps the last revert that
fired, so that a rollout can tell a revert that fired during its batch from an older one.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import json
import os
import signal
import time

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _errors, _hostfs, _revert_timer
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import (
    STATE_DIR, link_state, read_state, restoring_request)

RECORD_VERSION = 1
CHANGING_OPTIONS = ("config", "sets", "rules_file", "revert_to", "default_action", "sampling")


class ConfirmError(_errors.XdpfleetError):
    pass


def record_path(interface, state_dir=STATE_DIR):
    return os.path.join(state_dir, "%s.confirm.json" % interface)


def target_path(interface, state_dir=STATE_DIR):
    return os.path.join(state_dir, "%s.revert.json" % interface)


def read_record(interface, state_dir=STATE_DIR):
    path = record_path(interface, state_dir)
    try:
        with open(path) as handle:
            return json.load(handle)
    except IOError:
        return None
    except ValueError as error:
        raise ConfirmError("%s is not valid JSON: %s; remove it (a revert it armed then no longer fires)" % (path, error))


def check_request(request):
    """Refuses confirm options that are malformed or contradict the rest of the request, before anything is
    touched."""
    within, confirm, state = request.get("confirm_within"), request.get("confirm"), request["state"]
    problems = []
    if within is not None:
        if isinstance(within, bool) or not isinstance(within, int) or within < 1:
            problems.append("confirm_within: %r is not a positive whole number of seconds (give the time later tasks "
                            "have to confirm the change, such as 60)" % (within,))
        if state in ("gathered", "confirmed"):
            problems.append("confirm_within: not with state=%s, which changes no rules (give it on the task that "
                            "changes them)" % state)
        if confirm:
            problems.append("confirm_within and confirm: a task arms a revert (confirm_within) or confirms one "
                            "(confirm), not both; confirm on a later task")
    if confirm and state == "gathered":
        problems.append("confirm: not with state=gathered, which changes nothing (use state=confirmed)")
    for key in ("confirm_within", "confirm"):
        if request.get(key) and request.get("mode") in ("shadow", "discard"):
            problems.append("%s: not with mode=%s, which leaves the enforced rules as they are (give it with "
                            "mode=promote, or on a later task)" % (key, request["mode"]))
    given = [key for key in CHANGING_OPTIONS if request.get(key) is not None]
    if state == "confirmed" and given:
        problems.append("state=confirmed only confirms the armed revert, and %s change rules: apply the change in an "
                        "earlier task, or give confirm: true on the task that changes them" % ", ".join(given))
    if problems:
        raise ConfirmError("; ".join(problems))


def fire_request(interface, pin_dir, token, by):
    """The request with which _fw_run.run fires the revert armed with token; by: "timer" or "boot"."""
    return {"interface": interface, "pin_dir": pin_dir, "state": "overridden", "revert_token": token,
            "reverted_by": by}


def armed_token(interface, state_dir=STATE_DIR):
    """The token of the revert armed on interface, or None."""
    record = read_record(interface, state_dir)
    return record["token"] if _is_armed(record) else None


def _is_armed(record):
    return bool(record and record.get("state") == "armed")


class Revert:
    """The revert of one interface, as its record says; read and changed under the host lock."""

    def __init__(self, interface, state_dir=STATE_DIR, lock_dir=_hostfs.LOCK_DIR, pin_dir=None):
        self.interface, self.state_dir, self.lock_dir, self.pin_dir = interface, state_dir, lock_dir, pin_dir
        self.record = read_record(interface, state_dir)
        self.confirmed = False

    @property
    def armed(self):
        return _is_armed(self.record)

    def check(self, request):
        """Refuses a confirmation when the revert it would confirm has fired."""
        if request.get("confirm") and self.record and self.record.get("state") == "reverted":
            fired = self.record["reverted"]
            why = ("the host restarted before it was confirmed" if fired["by"] == "boot"
                   else "it was not confirmed within %d s" % fired["confirm_within"])
            raise ConfirmError("the change on %s was reverted at %s because %s (armed at %s): there is nothing to "
                               "confirm; apply it again with confirm_within and confirm it in time"
                               % (self.interface, utc(fired["at"]), why, utc(fired["armed_at"])))

    def firing(self, request):
        """The request that makes the kernel hold the saved desired state again, while the record holds the token
        of request (fire_request); None when the revert was confirmed, moved to a later deadline or fired."""
        if not (self.armed and self.record["token"] == request["revert_token"]):
            return None
        document = read_state(self.interface, path=self.record["target"])
        if document is None:
            raise ConfirmError("%s, the desired state to revert %s to, is missing: the revert cannot fire; confirm "
                               "or correct the change with a task" % (self.record["target"], self.interface))
        return dict(restoring_request(self.interface, request["pin_dir"], document),
                    revert_token=request["revert_token"], reverted_by=request["reverted_by"])

    def before_change(self, request, target, now=None):
        """Arms the revert of a change about to be applied with confirm_within (the first armed keeps its target:
        the desired state at the last confirmation). target: None when the stored desired state is the one to go
        back to, else the desired-state document of what the kernel holds."""
        if request.get("confirm_within"):
            self._arm(request["confirm_within"], target, time.time() if now is None else now)

    def after(self, request, changed, check_mode, now=None):
        """{"revert": the revert's state after the task, and "changed": true when the task changed the revert only}:
        fired (a request from firing), confirmed, its deadline moved (confirm_within on a task that changed no
        rules while a revert is armed) or, in check mode, what would be."""
        now = time.time() if now is None else now
        outcome = {}
        within = request.get("confirm_within")
        if request.get("revert_token"):
            self._fired(request["reverted_by"], now)
        elif request.get("confirm"):
            outcome["changed"] = self.confirm(check_mode) or changed
        elif within and check_mode and (changed or self.armed):
            self.record = dict(self.record or {}, state="armed", armed_at=now, deadline=now + within,
                               confirm_within=within, timer={"kind": _revert_timer.timer_kind()})
            outcome["changed"] = True
        elif within and not changed and self.armed:
            self._arm(within, None, now)
            outcome["changed"] = True
        outcome["revert"] = dict(self.status(now), confirmed=self.confirmed)
        return outcome

    def confirm(self, check_mode):
        """Marks the record confirmed, stops the armed revert's timer and removes its files; True when one was
        armed."""
        armed = self.record
        if not _is_armed(armed):
            return False
        self.record = dict(version=RECORD_VERSION, state="confirmed", interface=self.interface, at=time.time(),
                           reverted=armed.get("reverted"))
        if not check_mode:
            _write(record_path(self.interface, self.state_dir), self.record)
            _revert_timer.stop_timer(armed)
            _remove(armed["target"], armed.get("code"))
        self.confirmed = True
        return True

    def status(self, now=None):
        """The revert as results and facts show it."""
        return describe(self.record, time.time() if now is None else now)

    def _arm(self, seconds, target, now):
        previous = self.record if self.armed else None
        saved = previous["target"] if previous else self._save_target(target)
        token = binascii.hexlify(os.urandom(8)).decode("ascii")
        deadline = now + seconds
        try:
            root, code = _revert_timer.code_root(self.interface)
            timer = _revert_timer.start_timer(self.interface, token, deadline, root, dict(
                deadline=deadline, state_dir=self.state_dir, lock_dir=self.lock_dir,
                request=fire_request(self.interface, self.pin_dir, token, "timer")))
        except (OSError, _revert_timer.TimerError) as error:
            if not previous:
                _remove(saved)
            raise error if isinstance(error, _revert_timer.TimerError) else ConfirmError(
                "cannot arm the revert of %s: %s" % (self.interface, error))
        record = dict(version=RECORD_VERSION, state="armed", interface=self.interface, token=token, armed_at=now,
                      deadline=deadline, confirm_within=seconds, target=saved, code=code, timer=timer,
                      reverted=(self.record or {}).get("reverted"))
        # the new timer runs before the record names it and the old one stops after: a crash in between leaves
        # one of them armed
        _write(record_path(self.interface, self.state_dir), record)
        if previous:
            _revert_timer.stop_timer(previous)
        self.record = record

    def _save_target(self, document):
        path = target_path(self.interface, self.state_dir)
        if document is not None:
            _check_restorable(self.interface, document)
            _write(path, document)
            return path
        try:
            link_state(self.interface, path, self.state_dir)
        except OSError as error:
            raise ConfirmError("cannot save the desired state to revert %s to in %s: %s" % (self.interface, path, error))
        return path

    def _fired(self, by, now):
        armed = self.record
        self.record = dict(version=RECORD_VERSION, state="reverted", interface=self.interface, reverted=dict(
            at=now, by=by, armed_at=armed["armed_at"], deadline=armed["deadline"],
            confirm_within=armed["confirm_within"]))
        _write(record_path(self.interface, self.state_dir), self.record)
        _remove(armed["target"], armed.get("code"))


def confirm(interface, check_mode=False, state_dir=STATE_DIR, lock_dir=_hostfs.LOCK_DIR):
    """The result of a state=confirmed task: the armed revert confirmed (changed), nothing armed (not changed), or a
    failure when it has fired."""
    with _hostfs.host_lock(interface, lock_dir):
        revert = Revert(interface, state_dir, lock_dir)
        revert.check({"confirm": True})
        changed = revert.confirm(check_mode)
        return dict(changed=changed, interface=interface, revert=dict(revert.status(), confirmed=changed))


def describe(record, now):
    """The revert of a record as results and facts show it: armed (deadline, seconds left, timer and whether it
    runs, a failure to fire), and the last one that fired (reverted)."""
    status = dict(armed=False, armed_at=None, deadline=None, seconds_left=None, confirm_within=None, timer=None,
                  timer_running=None, failed=None, reverted=None)
    if _is_armed(record):
        timer = record["timer"]
        status.update(armed=True, armed_at=record["armed_at"], deadline=record["deadline"],
                      seconds_left=round(max(0.0, record["deadline"] - now), 1), confirm_within=record["confirm_within"],
                      timer=_revert_timer.timer_text(timer), failed=record.get("failed"),
                      timer_running=_revert_timer.timer_running(timer, record["token"]) if "token" in record else None)
    if record:
        status["reverted"] = record.get("reverted")
    return status


def status(interface, state_dir=STATE_DIR, now=None):
    """The revert of interface (see describe)."""
    return describe(read_record(interface, state_dir), time.time() if now is None else now)


# --- the timer ------------------------------------------------------------------------------------------------


def when_due(run, text):
    """The timer's side (TIMER_CODE): waits until the order's deadline, then has run (_fw_run.run) fire the revert;
    a failure is kept in the record for facts (the boot-time restore still reverts)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    order = json.loads(text)
    left = order["deadline"] - time.time()
    while left > 0:
        time.sleep(left)
        left = order["deadline"] - time.time()
    if armed_token(order["request"]["interface"], order["state_dir"]) != order["request"]["revert_token"]:
        return  # confirmed, moved or removed meanwhile (run checks again under the host lock)
    try:
        run(order["request"], environ={}, state_dir=order["state_dir"], lock_dir=order["lock_dir"])
    except Exception as error:  # noqa: BLE001 - kept for facts, then raised to the journal
        _record_failure(order, error)
        raise


def _record_failure(order, error):
    interface, token = order["request"]["interface"], order["request"]["revert_token"]
    with _hostfs.host_lock(interface, order["lock_dir"]):
        record = read_record(interface, order["state_dir"])
        if _is_armed(record) and record["token"] == token:
            record["failed"] = {"at": time.time(), "error": str(error)}
            _write(record_path(interface, order["state_dir"]), record)


# --- files ----------------------------------------------------------------------------------------------------


def _check_restorable(interface, document):
    sets = document.get("sets") or {}
    unknown = sorted(set(rule[key] for rule in document["rules"] for key in ("source_set", "destination_set")
                         if rule.get(key) and rule[key] not in sets))
    if unknown:
        raise ConfirmError("confirm_within: the rules %s holds are not those its desired-state file records, and they "
                           "name address sets (%s) whose entries are not on record, so there is no rule set to revert "
                           "to; apply the rules once without confirm_within" % (interface, ", ".join(unknown)))


def _write(path, document):
    directory = os.path.dirname(path)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        _hostfs.write_atomically(path, json.dumps(document, sort_keys=True, separators=(",", ":")))
    except OSError as error:
        raise ConfirmError("cannot write %s: %s" % (path, error))


def _remove(*paths):
    for path in paths:
        if path and os.path.exists(path):
            os.unlink(path)


def utc(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
