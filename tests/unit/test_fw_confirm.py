"""Confirmed changes (_fw_confirm through _fw_run.run) on the real firewall maps, pinned in a private bpffs: what
confirm_within arms, what a confirmation removes, what firing does (twice, late, after a confirmation), the
boot-time restore of an unconfirmed change, and the timer process itself."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_confirm, _fw_kernel, _fw_run, _restore, _revert_timer
from tests.helpers import reverters
from tests.unit import test_ruleset as ruleset_suite

# pytest finds fixtures by module attribute: the ruleset suite's firewall, loaded here as well.
firewall_object = ruleset_suite.firewall_object
host = ruleset_suite.host

REPO = ruleset_suite.REPO
OLD = [{"name": "old", "action": "drop", "source": "198.18.1.0/24"}]
NEW = [{"name": "new", "action": "drop", "source": "198.18.2.0/24"}]
NEWER = [{"name": "newer", "action": "drop", "protocol": "udp", "port": 53}]


def unnamed(rules):
    """The rules as the kernel holds them: without their names."""
    return [dict((key, value) for key, value in rule.items() if key != "name") for rule in rules]


OLD_IN_KERNEL, NEW_IN_KERNEL = unnamed(OLD), unnamed(NEW)


@pytest.fixture(autouse=True)
def no_timer_left(tmp_path):
    """Ends the timer processes a test started (they name its state directory), and fails a test that left one
    running."""
    yield
    left = reverters.pids(str(tmp_path))
    reverters.end(left)
    assert not left, "timer processes left running: %s" % left


def state_dir(host):
    return str(host.state_file.parent)


def record(host):
    return _fw_confirm.read_record("eth0", state_dir(host))


def kernel(host):
    ruleset = _fw_kernel.KernelRuleset(host.maps)
    return ruleset.entries(), ruleset.default_action, ruleset.sampling


def fire(host, token, by="timer"):
    return host(**_fw_confirm.fire_request("eth0", host.pin_dir, token, by))


def files(host):
    return sorted(name for name in os.listdir(state_dir(host)) if not name.startswith("."))


def await_exit(pid, timeout=5.0):
    """True once the timer process has ended; False when it runs on."""
    return reverters.ended(lambda: reverters.running(pid), timeout)


# --- before anything is touched ---------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (dict(confirm_within=0), "confirm_within: 0 is not a positive whole number of seconds (give the time"),
    (dict(confirm_within=-5), "confirm_within: -5 is not a positive whole number"),
    (dict(confirm_within=True), "confirm_within: True is not a positive whole number"),
    (dict(confirm_within="60"), "confirm_within: '60' is not a positive whole number"),
    (dict(confirm_within=30, confirm=True), "confirm_within and confirm: a task arms a revert"),
    (dict(confirm_within=30, state="gathered"), "confirm_within: not with state=gathered, which changes no rules"),
    (dict(confirm_within=30, state="confirmed", config=None), "confirm_within: not with state=confirmed"),
    (dict(confirm=True, state="gathered", config=None), "confirm: not with state=gathered, which changes nothing "
                                                        "(use state=confirmed)"),
    (dict(state="confirmed", default_action="drop"), "state=confirmed only confirms the armed revert, and config, "
                                                     "default_action change rules: apply the change in an earlier"),
    (dict(mode="shadow", confirm_within=30), "confirm_within: not with mode=shadow, which leaves the enforced rules "
                                             "as they are (give it with mode=promote, or on a later task)"),
    (dict(mode="discard", config=None, confirm=True), "confirm: not with mode=discard"),
])
def test_bad_confirm_options_are_refused_naming_the_field_before_anything_changes(host, args, message):
    host(state="overridden", config=OLD)
    before = files(host)
    with pytest.raises(_fw_confirm.ConfirmError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        host(**dict(dict(state="overridden", config=NEW), **args))
    assert files(host) == before and kernel(host)[0] == OLD_IN_KERNEL and reverters.pids(state_dir(host)) == []


# --- arming, confirming, firing -------------------------------------------------------------------------------


def test_a_change_with_confirm_within_arms_a_revert_to_the_state_before_it_and_firing_restores_that(host):
    host(state="overridden", config=OLD, default_action="pass", sampling=0)
    saved = host.state_file.read_text()
    armed = host(state="overridden", config=NEW, default_action="drop", sampling=7, confirm_within=300)
    revert = armed["revert"]
    assert armed["changed"] and revert["armed"] and revert["confirm_within"] == 300 and not revert["confirmed"]
    assert revert["deadline"] == pytest.approx(time.time() + 300, abs=5) and 295 < revert["seconds_left"] <= 300
    assert revert["timer"] == "process %d" % record(host)["timer"]["pid"] and revert["timer_running"]
    assert files(host) == ["eth0.confirm.json", "eth0.json", "eth0.names", "eth0.previous.json", "eth0.revert.json"]
    assert (host.state_file.parent / "eth0.revert.json").read_text() == saved
    assert kernel(host) == (NEW_IN_KERNEL, "drop", 7)

    token, pid = record(host)["token"], record(host)["timer"]["pid"]
    reverted = fire(host, token)
    assert reverted["changed"] and reverted["after"] == OLD and kernel(host) == (OLD_IN_KERNEL, "pass", 0)
    assert reverted["revert"]["reverted"]["by"] == "timer" and not reverted["revert"]["armed"]
    assert files(host) == ["eth0.confirm.json", "eth0.json", "eth0.names", "eth0.previous.json"]
    again = fire(host, token)
    assert not again["changed"] and kernel(host) == (OLD_IN_KERNEL, "pass", 0)
    reverters.end([pid])


def test_a_confirmation_after_the_revert_fired_fails_saying_when_and_why_until_a_new_one_is_armed(host):
    host(state="overridden", config=OLD)
    host(state="overridden", config=NEW, confirm_within=45)
    armed = record(host)
    fire(host, armed["token"])
    reverters.end([armed["timer"]["pid"]])
    for args in (dict(state="confirmed"), dict(confirm=True), dict(state="overridden", config=NEW, confirm=True)):
        with pytest.raises(_fw_confirm.ConfirmError) as error:
            host(**args)
        assert str(error.value).startswith("the change on eth0 was reverted at ")
        assert "because it was not confirmed within 45 s (armed at " in str(error.value)
        assert str(error.value).endswith("there is nothing to confirm; apply it again with confirm_within and "
                                         "confirm it in time")
    assert kernel(host)[0] == OLD_IN_KERNEL
    fired = record(host)["reverted"]
    rearmed = host(state="overridden", config=NEW, confirm_within=60)["revert"]
    assert rearmed["armed"] and rearmed["reverted"] == fired, "the last revert that fired was forgotten"
    pid = record(host)["timer"]["pid"]
    confirmed = host(state="confirmed")
    assert confirmed["changed"] and confirmed["revert"]["confirmed"] and kernel(host)[0] == NEW_IN_KERNEL
    assert confirmed["revert"]["reverted"] == fired and host(state="gathered")["revert"]["reverted"] == fired
    assert await_exit(pid)


def test_a_confirmation_removes_the_revert_and_ends_its_process_and_a_second_one_changes_nothing(host):
    host(state="overridden", config=OLD)
    host(state="overridden", config=NEW, confirm_within=60)
    armed = record(host)
    check = host(state="confirmed", check_mode=True)
    assert check["changed"] and check["revert"]["confirmed"] and record(host) == armed
    confirmed = host(state="confirmed")
    assert confirmed == {"changed": True, "interface": "eth0", "revert": dict(
        _fw_confirm.describe(None, 0), confirmed=True)}
    assert files(host) == ["eth0.confirm.json", "eth0.json", "eth0.names", "eth0.previous.json"]
    assert record(host)["state"] == "confirmed"
    assert await_exit(armed["timer"]["pid"]), "the timer process was not ended"
    assert not host(state="confirmed")["changed"] and not host(confirm=True)["changed"]
    assert not fire(host, armed["token"])["changed"] and kernel(host)[0] == NEW_IN_KERNEL


def test_confirm_on_a_changing_task_applies_the_change_then_confirms(host):
    host(state="overridden", config=OLD)
    host(state="overridden", config=NEW, confirm_within=60)
    pid = record(host)["timer"]["pid"]
    both = host(state="merged", config=NEWER, confirm=True)
    assert both["changed"] and both["revert"]["confirmed"] and not both["revert"]["armed"]
    assert kernel(host)[0] == NEW_IN_KERNEL + unnamed(NEWER)
    assert record(host)["state"] == "confirmed" and await_exit(pid)


def test_a_second_armed_change_keeps_the_first_target_and_moves_the_deadline(host):
    host(state="overridden", config=OLD)
    host(state="overridden", config=NEW, confirm_within=60)
    first = record(host)
    plain = host(state="merged", config=NEWER)
    assert plain["changed"] and record(host) == first, "a change without confirm_within changed the revert"
    again = host(state="overridden", config=NEWER, confirm_within=120)
    second = record(host)
    assert again["revert"]["armed"] and second["token"] != first["token"] and second["target"] == first["target"]
    assert second["deadline"] == pytest.approx(time.time() + 120, abs=5)
    assert await_exit(first["timer"]["pid"]), "the first timer process was not ended"
    assert not fire(host, first["token"])["changed"], "the first timer fired after it was replaced"
    assert kernel(host)[0] != OLD_IN_KERNEL
    assert fire(host, second["token"])["after"] == OLD and kernel(host)[0] == OLD_IN_KERNEL
    reverters.end([second["timer"]["pid"]])


def test_confirm_within_on_a_task_that_changes_nothing_moves_an_armed_deadline_and_arms_nothing_else(host):
    host(state="overridden", config=OLD)
    idle = host(state="overridden", config=OLD, confirm_within=60)
    assert not idle["changed"] and not idle["revert"]["armed"] and record(host) is None
    host(state="overridden", config=NEW, confirm_within=30)
    first = record(host)
    moved = host(state="overridden", config=NEW, confirm_within=90)
    assert moved["changed"] and moved["summary"] == {"added": 0, "removed": 0, "changed": 0}
    assert record(host)["deadline"] > first["deadline"] + 50 and record(host)["target"] == first["target"]
    assert await_exit(first["timer"]["pid"])
    reverters.end([record(host)["timer"]["pid"]])


def test_promoting_a_shadow_set_with_confirm_within_arms_the_revert_to_the_set_enforced_before(host):
    host(state="overridden", config=OLD)
    host(state="overridden", config=NEW, mode="shadow")
    promoted = host(mode="promote", confirm_within=60)
    assert promoted["changed"] and promoted["mode"] == "promote" and promoted["revert"]["armed"]
    assert kernel(host)[0] == NEW_IN_KERNEL
    armed = record(host)
    assert fire(host, armed["token"])["after"] == OLD and kernel(host)[0] == OLD_IN_KERNEL
    assert host(state="gathered")["revert"]["reverted"]["by"] == "timer"
    reverters.end([armed["timer"]["pid"]])


def test_check_mode_predicts_the_revert_and_arms_nothing(host):
    host(state="overridden", config=OLD)
    predicted = host(state="overridden", config=NEW, confirm_within=60, check_mode=True)
    assert predicted["changed"] and predicted["revert"]["armed"] and predicted["revert"]["timer"] == "a process timer"
    assert predicted["revert"]["deadline"] == pytest.approx(time.time() + 60, abs=5)
    assert record(host) is None and reverters.pids(state_dir(host)) == [] and kernel(host)[0] == OLD_IN_KERNEL
    assert files(host) == ["eth0.json", "eth0.names"]


def test_without_a_stored_state_the_revert_goes_back_to_no_rules_and_the_settings_the_kernel_had(host):
    host(state="overridden", config=NEW, default_action="drop", sampling=3, confirm_within=60)
    armed = record(host)
    target = json.loads((host.state_file.parent / "eth0.revert.json").read_text())
    assert (target["rules"], target["default_action"], target["sampling"]) == ([], "pass", 0)
    fire(host, armed["token"])
    assert kernel(host) == ([], "pass", 0)
    reverters.end([armed["timer"]["pid"]])


def test_rules_the_state_file_does_not_record_are_the_target_when_the_kernel_differs(host):
    host(state="overridden", config=OLD)
    host.state_file.unlink()  # the kernel keeps OLD; nothing on disk says so
    host(state="overridden", config=NEW, confirm_within=60)
    armed = record(host)
    assert fire(host, armed["token"])["after"] == OLD_IN_KERNEL and kernel(host)[0] == OLD_IN_KERNEL
    reverters.end([armed["timer"]["pid"]])


# --- the timer's side -------------------------------------------------------------------------------------------


def test_the_timer_process_fires_at_the_deadline_and_ends(host):
    host(state="overridden", config=OLD)
    armed = host(state="overridden", config=NEW, confirm_within=1)["revert"]
    pid = record(host)["timer"]["pid"]
    while kernel(host)[0] != OLD_IN_KERNEL and time.time() < armed["deadline"] + 2:
        time.sleep(0.005)
    reverted_at = time.time()
    assert kernel(host)[0] == OLD_IN_KERNEL, "not reverted within the deadline + 2 s"
    assert armed["deadline"] <= reverted_at < armed["deadline"] + 2
    assert await_exit(pid), "the timer process did not end after firing"
    assert record(host)["state"] == "reverted" and record(host)["reverted"]["at"] >= armed["deadline"]


def test_when_due_fires_a_due_revert_and_keeps_a_failure_in_the_record(host):
    host(state="overridden", config=OLD)
    host(state="overridden", config=NEW, confirm_within=60)
    armed = record(host)
    reverters.end([armed["timer"]["pid"]])
    order = dict(deadline=time.time() - 1, state_dir=state_dir(host), lock_dir=str(host.state_file.parent.parent / "run"),
                 request=_fw_confirm.fire_request("eth0", host.pin_dir + "-gone", armed["token"], "timer"))
    hangup = signal.getsignal(signal.SIGHUP)  # when_due ignores it, as a timer process must
    try:
        with pytest.raises(_fw_kernel.FirewallMissing):
            _fw_confirm.when_due(_fw_run.run, json.dumps(order))
    finally:
        signal.signal(signal.SIGHUP, hangup)
    failed = host(state="gathered")["revert"]
    assert failed["armed"] and failed["seconds_left"] > 0 and failed["timer_running"] is False
    assert failed["failed"]["error"].endswith("(attach it with xdpfleet.xdp.xdp_program)")
    order["request"]["pin_dir"] = host.pin_dir
    try:
        _fw_confirm.when_due(_fw_run.run, json.dumps(order))
    finally:
        signal.signal(signal.SIGHUP, hangup)
    assert kernel(host)[0] == OLD_IN_KERNEL and record(host)["state"] == "reverted"


def test_the_boot_time_restore_reverts_an_unconfirmed_change_and_restores_a_confirmed_one(host, tmp_path):
    run_dir = str(tmp_path / "run")
    host(state="overridden", config=OLD)
    host(state="overridden", config=NEW, confirm_within=60)
    reverters.end([record(host)["timer"]["pid"]])  # as a reboot would
    armed_at = _fw_confirm.utc(record(host)["armed_at"])
    assert _restore.rules_restored("eth0", host.pin_dir, state_dir(host), run_dir) == \
        "1 rules, reverting the change armed at %s that was not confirmed" % armed_at
    assert kernel(host)[0] == OLD_IN_KERNEL and record(host)["reverted"]["by"] == "boot"
    with pytest.raises(_fw_confirm.ConfirmError, match="because the host restarted before it was confirmed"):
        host(state="confirmed")
    host(state="overridden", config=NEW, confirm_within=60)
    host(state="confirmed")
    assert _restore.rules_restored("eth0", host.pin_dir, state_dir(host), run_dir) == "1 rules"
    assert kernel(host)[0] == NEW_IN_KERNEL


def test_the_timer_runs_a_copy_of_the_zip_the_code_came_in(tmp_path):
    """Ansible's payload zip is deleted when the module exits: the timer gets a copy (here of the restore zipapp,
    which holds the same module_utils)."""
    sys.path.insert(0, str(REPO / "roles" / "firewall" / "files"))
    try:
        import build
    finally:
        sys.path.pop(0)
    payload = tmp_path / "payload.zip"
    payload.write_bytes(build.zipapp_bytes(str(REPO)))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from ansible_collections.xdpfleet.xdp.plugins.module_utils import _revert_timer; "
            "print(_revert_timer.code_root('eth0', sys.argv[2]))")
    shown = subprocess.run([sys.executable, "-c", code, str(payload), str(tmp_path / "lib")], capture_output=True,
                           text=True, check=True).stdout
    copy = tmp_path / "lib" / "eth0.revert.zip"
    assert shown.strip() == str((str(copy), str(copy)))
    assert copy.read_bytes() == payload.read_bytes() and copy.stat().st_mode & 0o777 == 0o600
    assert _revert_timer.code_root("eth0", str(tmp_path / "unused")) == (str(REPO / ".collections"), None)


def test_unit_names_keep_to_the_characters_systemd_takes():
    assert _revert_timer.unit_name("eth0.100", "0123456789abcdef") == "xdpfleet-revert-eth0.100-01234567"
    assert _revert_timer.unit_name("br:lan@x", "ff" * 8) == "xdpfleet-revert-br_3alan_40x-ffffffff"
