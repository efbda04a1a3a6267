# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of xdp_rules: hands config to the host as one JSON text.

Ansible deep-copies a module's arguments on the host before the module sees them: for 100,000 rule dicts
that copy is a large part of a run, for one string it is nothing (docs/PERFORMANCE.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase
from ansible_collections.xdpfleet.xdp.plugins.module_utils._fw_store import entries_json

MODULE = "xdpfleet.xdp.xdp_rules"


def module_args(task_args):
    """The task's arguments with a config list replaced by its JSON text, in the form the module stores
    its digest in, so that a run that changes nothing is found so from the text alone."""
    args = dict(task_args)
    text = entries_json(args["config"]) if isinstance(args.get("config"), list) else None
    if text is not None:
        args["config"] = text
    return args


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        wrap_async = self._task.async_val
        result.update(self._execute_module(MODULE, module_args=module_args(self._task.args), task_vars=task_vars,
                                           wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
