"""xdp_stats' Prometheus textfile: rendering (names, types, HELP, label escaping, per-rule metrics),
promtool's verdict on it, and the file update (atomic, only on a difference, check mode, mode)."""

import os
import re
import stat
import subprocess

import pytest

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _prometheus

VERDICTS = ("aborted", "drop", "pass", "tx", "redirect", "malformed")
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")


ROOT = {"position": 0, "place": "root", "prog_id": 40, "name": "xdpfleet_fw", "tag": "3b185187f1855c4c",
        "owner": "xdpfleet", "program": "xdpfleet_fw", "object_sha256": "9f" * 32}
CHAINED = {"position": 1, "place": "chained", "prog_id": 41, "name": "xt_filter", "tag": "77aa", "owner": "xdpfleet",
           "program": "xt_filter", "object_sha256": "ab" * 32}
COUNTED = 'program="xdpfleet_fw",place="root"'


def firewall(top_rules=(), rate_limits=()):
    return {"attached": True, "owner": "xdpfleet", "mode": "native", "tag": "3b185187f1855c4c",
            "object_sha256": "9f" * 32, "firewall": True, "rule_count": 2, "default_action": "pass",
            "stats": {verdict: {"packets": 10 + index, "bytes": 1000 + index} for index, verdict in enumerate(VERDICTS)},
            "top_rules": list(top_rules), "rate_limits": list(rate_limits),
            "hook": {"mechanism": "exclusive", "programs": [ROOT]},
            "counted_by": {"position": 0, "place": "root", "prog_id": 40, "name": "xdpfleet_fw"}}


NOTHING_ATTACHED = {"attached": False, "owner": None, "mode": None, "tag": None, "object_sha256": None,
                    "firewall": False, "rule_count": None, "default_action": None, "stats": {}, "top_rules": []}
NO_PING = {"position": 1, "name": "no-ping", "rule": "drop icmp from 198.18.0.2/32 to any", "action": "drop",
           "counter": 0, "packets": 50, "bytes": 4900}
UNNAMED = {"position": 2, "name": None, "rule": "drop udp to any port 53", "action": "drop",
           "counter": 1, "packets": 0, "bytes": 0}
SYN_FLOOD = {"position": 3, "name": "syn-flood", "sources": 31,
             "rule": "rate_limit tcp from any to any tcp_flags syn,!ack (50 pps burst 100 per source /32)",
             "passed": {"packets": 1500, "bytes": 90000}, "limited": {"packets": 98500, "bytes": 5910000}}


def families(text):
    """{metric: (type, help)} from the # TYPE and # HELP lines."""
    helps = dict(re.findall(r"^# HELP (\S+) (.+)$", text, re.M))
    return {name: (kind, helps.get(name)) for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)}


def samples(text, metric):
    return [line for line in text.splitlines() if line.startswith(metric + "{")]


# --- rendering --------------------------------------------------------------------------------


def test_label_values_escape_backslash_quote_and_newline():
    assert _prometheus.label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert _prometheus.label_value(None) == "" and _prometheus.label_value(7) == "7"


def test_every_family_has_a_valid_name_a_type_and_help():
    text = _prometheus.render({"eth0": firewall([NO_PING])})
    found = families(text)
    assert found == {
        "xdpfleet_program_attached": ("gauge", found["xdpfleet_program_attached"][1]),
        "xdpfleet_hook_program": ("gauge", found["xdpfleet_hook_program"][1]),
        "xdpfleet_rules": ("gauge", found["xdpfleet_rules"][1]),
        "xdpfleet_set_entries": ("gauge", found["xdpfleet_set_entries"][1]),
        "xdpfleet_packets_total": ("counter", found["xdpfleet_packets_total"][1]),
        "xdpfleet_bytes_total": ("counter", found["xdpfleet_bytes_total"][1]),
        "xdpfleet_rule_hit_packets_total": ("counter", found["xdpfleet_rule_hit_packets_total"][1]),
        "xdpfleet_rule_hit_bytes_total": ("counter", found["xdpfleet_rule_hit_bytes_total"][1]),
        "xdpfleet_rate_limit_passed_packets_total": ("counter", found["xdpfleet_rate_limit_passed_packets_total"][1]),
        "xdpfleet_rate_limit_limited_packets_total": ("counter",
                                                      found["xdpfleet_rate_limit_limited_packets_total"][1]),
        "xdpfleet_rate_limit_sources": ("gauge", found["xdpfleet_rate_limit_sources"][1]),
        "xdpfleet_shadow_packets_total": ("counter", found["xdpfleet_shadow_packets_total"][1]),
        "xdpfleet_shadow_new_drop_packets_total": ("counter", found["xdpfleet_shadow_new_drop_packets_total"][1]),
        "xdpfleet_shadow_new_pass_packets_total": ("counter", found["xdpfleet_shadow_new_pass_packets_total"][1]),
        "xdpfleet_xdp_exceptions_total": ("counter", found["xdpfleet_xdp_exceptions_total"][1]),
        "xdpfleet_xdp_redirect_errors_total": ("counter", found["xdpfleet_xdp_redirect_errors_total"][1]),
        "xdpfleet_kernel_drops_total": ("counter", found["xdpfleet_kernel_drops_total"][1]),
    }
    for name, (kind, help_text) in found.items():
        assert METRIC_NAME.match(name) and help_text, name
        assert name.endswith("_total") == (kind == "counter"), name


def test_firewall_interface_gives_program_rules_and_verdict_samples():
    text = _prometheus.render({"eth0": firewall()})
    assert samples(text, "xdpfleet_program_attached") == [
        'xdpfleet_program_attached{interface="eth0",owner="xdpfleet",mode="native",tag="3b185187f1855c4c",'
        'object_sha256="%s"} 1' % ("9f" * 32)]
    assert samples(text, "xdpfleet_rules") == ['xdpfleet_rules{interface="eth0",default_action="pass"} 2']
    assert samples(text, "xdpfleet_packets_total") == [
        'xdpfleet_packets_total{interface="eth0",%s,verdict="%s"} %d' % (COUNTED, verdict, 10 + VERDICTS.index(verdict))
        for verdict in sorted(VERDICTS)]
    assert ('xdpfleet_bytes_total{interface="eth0",%s,verdict="drop"} 1001' % COUNTED
            in samples(text, "xdpfleet_bytes_total"))


def test_each_program_on_the_hook_gives_a_sample_in_run_order():
    chained = dict(firewall(), hook={"mechanism": "chained", "programs": [ROOT, CHAINED]})
    text = _prometheus.render({"eth0": chained, "eth1": NOTHING_ATTACHED})
    assert samples(text, "xdpfleet_hook_program") == [
        'xdpfleet_hook_program{interface="eth0",position="0",place="root",program="xdpfleet_fw",owner="xdpfleet",'
        'tag="3b185187f1855c4c"} 1',
        'xdpfleet_hook_program{interface="eth0",position="1",place="chained",program="xt_filter",owner="xdpfleet",'
        'tag="77aa"} 1']


def test_each_address_set_gives_its_entry_count():
    text = _prometheus.render({"eth0": dict(firewall(), sets={"blocklist": 100000, "admins": 3})})
    assert samples(text, "xdpfleet_set_entries") == ['xdpfleet_set_entries{interface="eth0",set="admins"} 3',
                                                     'xdpfleet_set_entries{interface="eth0",set="blocklist"} 100000']


def counters(*rules, others=None):
    return {"rules": [dict((key, rule[key]) for key in ("name", "rule", "action", "packets", "bytes"))
                      for rule in rules], "others": others or {}}


def test_each_rule_gives_a_packets_and_a_bytes_sample_by_name_or_text_with_escaped_labels():
    quoted = dict(NO_PING, name='say "hi"\\now')
    text = _prometheus.render({"eth0": dict(firewall(), rule_counters=counters(quoted, UNNAMED))})
    labels = 'interface="eth0",rule="%s",action="drop"'
    assert samples(text, "xdpfleet_rule_hit_packets_total") == [
        "xdpfleet_rule_hit_packets_total{%s} 0" % (labels % UNNAMED["rule"]),
        "xdpfleet_rule_hit_packets_total{%s} 50" % (labels % 'say \\"hi\\"\\\\now')]
    assert samples(text, "xdpfleet_rule_hit_bytes_total")[1].endswith("} 4900")


def test_rule_series_do_not_change_when_rules_move_and_the_rest_are_summed_by_action():
    """Reordered rules give the same text; unnamed rules of one text are one series; past the cap, one per action."""
    twin = dict(UNNAMED, position=3, packets=5, bytes=300)
    before = _prometheus.render({"eth0": dict(firewall(), rule_counters=counters(
        NO_PING, UNNAMED, twin, others={"pass": {"rules": 7, "packets": 4, "bytes": 400}}))})
    after = _prometheus.render({"eth0": dict(firewall(), rule_counters=counters(
        twin, NO_PING, dict(UNNAMED, position=9), others={"pass": {"rules": 7, "packets": 4, "bytes": 400}}))})
    assert before == after
    assert samples(after, "xdpfleet_rule_hit_packets_total") == [
        'xdpfleet_rule_hit_packets_total{interface="eth0",rule="(others)",action="pass"} 4',
        'xdpfleet_rule_hit_packets_total{interface="eth0",rule="%s",action="drop"} 5' % UNNAMED["rule"],
        'xdpfleet_rule_hit_packets_total{interface="eth0",rule="no-ping",action="drop"} 50']
    assert "position" not in "".join(samples(after, "xdpfleet_rule_hit") + samples(after, "xdpfleet_rate_limit"))


def test_each_rate_limit_gives_passed_limited_and_tracked_sources():
    text = _prometheus.render({"eth0": firewall(rate_limits=[SYN_FLOOD])})
    labels = 'interface="eth0",rule="syn-flood"'
    assert samples(text, "xdpfleet_rate_limit_passed_packets_total") == [
        "xdpfleet_rate_limit_passed_packets_total{%s} 1500" % labels]
    assert samples(text, "xdpfleet_rate_limit_limited_packets_total") == [
        "xdpfleet_rate_limit_limited_packets_total{%s} 98500" % labels]
    assert samples(text, "xdpfleet_rate_limit_sources") == ["xdpfleet_rate_limit_sources{%s} 31" % labels]


def test_a_shadow_set_gives_its_verdicts_and_disagreements_and_none_gives_no_sample():
    shadow = {"stats": {"drop": {"packets": 120, "bytes": 7200}, "pass": {"packets": 880, "bytes": 52800}},
              "new_drops": {"packets": 70, "bytes": 4200}, "new_passes": {"packets": 3, "bytes": 180}}
    text = _prometheus.render({"eth0": dict(firewall(), shadow=shadow), "eth1": dict(firewall(), shadow=None)})
    assert samples(text, "xdpfleet_shadow_packets_total") == [
        'xdpfleet_shadow_packets_total{interface="eth0",%s,verdict="drop"} 120' % COUNTED,
        'xdpfleet_shadow_packets_total{interface="eth0",%s,verdict="pass"} 880' % COUNTED]
    assert samples(text, "xdpfleet_shadow_new_drop_packets_total") == [
        'xdpfleet_shadow_new_drop_packets_total{interface="eth0"} 70']
    assert samples(text, "xdpfleet_shadow_new_pass_packets_total") == [
        'xdpfleet_shadow_new_pass_packets_total{interface="eth0"} 3']


def test_the_monitor_counters_of_every_interface_with_their_labels():
    monitor = {"exceptions": [{"prog_id": 7, "program": "xdp_abort", "action": "ABORTED", "packets": 5}],
               "redirect_errors": [{"prog_id": 7, "program": "xdp_abort", "error": "ENETDOWN", "packets": 2}],
               "drops": [{"reason": "NO_SOCKET", "packets": 3}]}
    text = _prometheus.render({"eth1": dict(NOTHING_ATTACHED, monitor=monitor), "eth0": firewall()})
    assert samples(text, "xdpfleet_xdp_exceptions_total") == [
        'xdpfleet_xdp_exceptions_total{interface="eth1",prog_id="7",program="xdp_abort",action="ABORTED"} 5']
    assert samples(text, "xdpfleet_xdp_redirect_errors_total") == [
        'xdpfleet_xdp_redirect_errors_total{interface="eth1",prog_id="7",program="xdp_abort",error="ENETDOWN"} 2']
    assert samples(text, "xdpfleet_kernel_drops_total") == [
        'xdpfleet_kernel_drops_total{interface="eth1",reason="NO_SOCKET"} 3']


def test_interface_without_the_firewall_only_reports_not_attached():
    text = _prometheus.render({"eth1": NOTHING_ATTACHED, "eth0": firewall()})
    assert samples(text, "xdpfleet_program_attached") == [
        samples(text, "xdpfleet_program_attached")[0],
        'xdpfleet_program_attached{interface="eth1",owner="",mode="",tag="",object_sha256=""} 0']
    assert all('interface="eth1"' not in line for line in samples(text, "xdpfleet_packets_total"))
    assert text.endswith("\n") and not text.endswith("\n\n")


@pytest.mark.parametrize("interfaces", [{}, {"eth0": NOTHING_ATTACHED},
                                        {"eth0": firewall([NO_PING, UNNAMED], [SYN_FLOOD]),
                                         "eth1": NOTHING_ATTACHED}])
def test_promtool_accepts_the_textfile(interfaces):
    checked = subprocess.run(["promtool", "check", "metrics"], input=_prometheus.render(interfaces),
                             capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, bits", [("0644", 0o644), ("600", 0o600), (0o640, 0o640), ("01755", 0o1755)])
def test_mode_is_octal_text_or_an_integer(value, bits):
    assert _prometheus.file_mode(value) == bits


@pytest.mark.parametrize("value", ["rw-r--r--", "0899", "", "077777", -1, True])
def test_bad_mode_is_refused_naming_the_field(value):
    with pytest.raises(_prometheus.TextfileError, match="^mode must be"):
        _prometheus.file_mode(value)


@pytest.mark.parametrize("path", ["relative/xdpfleet.prom", "/var/lib/xdpfleet.txt"])
def test_bad_textfile_path_is_refused_naming_the_field(path):
    with pytest.raises(_prometheus.TextfileError, match="^textfile must"):
        _prometheus.check_path(path)


# --- the file ---------------------------------------------------------------------------------


def test_missing_directory_is_created_0755_and_the_file_written_with_its_mode(tmp_path):
    path = tmp_path / "collector" / "xdpfleet.prom"
    assert _prometheus.update_textfile(str(path), "a 1\n", 0o640) == (True, None)
    assert path.read_text() == "a 1\n"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755 and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(path.parent) == ["xdpfleet.prom"], "a temporary file was left behind"


def test_same_content_is_not_a_change_and_the_file_is_not_rewritten(tmp_path):
    path = tmp_path / "xdpfleet.prom"
    _prometheus.update_textfile(str(path), "a 1\n", 0o644)
    inode = path.stat().st_ino
    assert _prometheus.update_textfile(str(path), "a 1\n", 0o644) == (False, "a 1\n")
    assert path.stat().st_ino == inode


def test_new_content_replaces_the_file_by_rename(tmp_path):
    path = tmp_path / "xdpfleet.prom"
    _prometheus.update_textfile(str(path), "a 1\n", 0o644)
    inode = path.stat().st_ino
    assert _prometheus.update_textfile(str(path), "a 2\n", 0o644) == (True, "a 1\n")
    assert path.read_text() == "a 2\n" and path.stat().st_ino != inode


def test_only_a_different_mode_is_a_change(tmp_path):
    path = tmp_path / "xdpfleet.prom"
    _prometheus.update_textfile(str(path), "a 1\n", 0o600)
    assert _prometheus.update_textfile(str(path), "a 1\n", 0o644) == (True, "a 1\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_check_mode_tells_and_writes_nothing(tmp_path):
    path = tmp_path / "collector" / "xdpfleet.prom"
    assert _prometheus.update_textfile(str(path), "a 1\n", 0o644, check_mode=True) == (True, None)
    assert not path.parent.exists()
    _prometheus.update_textfile(str(path), "a 1\n", 0o644)
    assert _prometheus.update_textfile(str(path), "a 2\n", 0o600, check_mode=True) == (True, "a 1\n")
    assert path.read_text() == "a 1\n" and stat.S_IMODE(path.stat().st_mode) == 0o644


def test_unwritable_place_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(_prometheus.TextfileError, match="^textfile .* cannot be"):
        _prometheus.update_textfile(str(blocker / "xdpfleet.prom"), "a 1\n", 0o644)
