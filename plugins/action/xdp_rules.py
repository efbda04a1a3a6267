# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of xdp_rules: reads rules_file and set files (module_utils/_fw_sources.py), then asks the
host with the digest of the request alone; only a host that has not applied that request yet gets the content
(rules as one JSON text, sets compressed) in a second call. A file this controller has just parsed for the
first time cannot have reached a host from it yet: its content goes with the first call (the host still
compares digests before it parses anything).

Ansible deep-copies a module's arguments on the host before the module sees them: for 100,000 rule dicts
that copy is a large part of a run, for one string it is nothing (docs/PERFORMANCE.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.xdpfleet.xdp.plugins.module_utils import _fw_sources
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import entries_json, json_digest

MODULE = "xdpfleet.xdp.xdp_rules"
CONTROLLER_OPTIONS = ("rules_file", "rules_file_format", "sets")


def module_args(task_args, find_file=lambda path: path):
    """(The module's arguments without content, the content: config as JSON text and sets in the module's
    form). config arrives in the form the module stores its digest in, so that a run that changes nothing is
    found so from the text alone. find_file resolves a controller path as the task's files are."""
    args = dict((key, value) for key, value in task_args.items() if key not in CONTROLLER_OPTIONS)
    if task_args.get("rules_file") and task_args.get("config") is not None:
        raise _fw_sources.SourceError("config and rules_file are mutually exclusive: give the rules in one place")
    content = {}
    if task_args.get("rules_file"):
        source = _fw_sources.parse_rules_file(find_file(task_args["rules_file"]), task_args.get("rules_file_format"))
        config_digest, content["config"] = source.digest, source
    else:
        config = args.pop("config", None)
        text = entries_json(config) if isinstance(config, list) else config
        config_digest = json_digest(text) if isinstance(text, str) else None
        if text is not None:
            content["config"] = text
    set_digests, sets = _sets(task_args.get("sets"), find_file)
    if sets:
        content["sets"] = sets
    if content and args.get("state") != "gathered":
        args["content_digest"] = _fw_sources.request_digest(args, config_digest, set_digests)
    return args, content


def probe_first(args, content, wrap_async=False):
    """True when the host is to be asked with the request's digest before any content is sent."""
    parts = [content.get("config")] + list(content.get("sets", {}).values())
    new = any(isinstance(part, _fw_sources.CachedSource) and part.new for part in parts)
    return bool(args.get("content_digest")) and not wrap_async and not new


def _sets(sets, find_file):
    """({name: digest}, {name: module form, or the CachedSource of a file, read when sent}) of the sets option."""
    if sets is None:
        return {}, {}
    if not isinstance(sets, dict):
        raise _fw_sources.SourceError("sets: must be a dict of set name: a list of addresses, or {file: PATH}")
    digests, forms = {}, {}
    for name, value in sets.items():
        if isinstance(value, dict) and value.get("file"):
            source = _fw_sources.parse_set_file(find_file(value["file"]), value.get("format"))
            digests[name], forms[name] = source.digest, source
        elif isinstance(value, list):
            digests[name], forms[name] = _fw_sources.inline_set(name, value)
        else:
            raise _fw_sources.SourceError("sets.%s: must be a list of addresses and CIDRs, or {file: PATH} with an "
                                          "optional format (text, json, yaml)" % name)
    return digests, forms


def with_content(args, content):
    """The module's arguments with the content, the parts still in the controller's cache read now."""
    full = dict(args)
    if "config" in content:
        full["config"] = _value(content["config"])
    if "sets" in content:
        full["sets"] = dict((name, _value(form)) for name, form in content["sets"].items())
    return full


def module_args_with_content(task_args, find_file=lambda path: path):
    """The module's arguments of a task sent in one call, content and all (as async tasks are)."""
    return with_content(*module_args(task_args, find_file))


def _value(value):
    return value.payload if isinstance(value, _fw_sources.CachedSource) else value


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        wrap_async = self._task.async_val
        try:
            args, content = module_args(self._task.args, self._find_file)
        except XdpfleetError as error:
            raise AnsibleActionFail(str(error))
        answer = None
        if probe_first(args, content, wrap_async):
            answer = self._execute_module(MODULE, module_args=args, task_vars=task_vars)
        if answer is None or answer.get("content_needed"):
            answer = self._execute_module(MODULE, module_args=with_content(args, content), task_vars=task_vars,
                                          wrap_async=wrap_async)
        result.update(answer)
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _find_file(self, path):
        try:
            return self._find_needle("files", path)
        except AnsibleError as error:
            raise _fw_sources.SourceError("cannot find %s: %s" % (path, error))
