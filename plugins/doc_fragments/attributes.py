# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Attributes shared by the xdpfleet modules."""

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying the host.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  platform:
    description: Target is a Linux host with a kernel that supports XDP and BPF.
    support: full
    platforms: posix
"""

    ACTIONGROUP = r"""
options: {}
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
"""

    INTERFACE = r"""
options:
  interface:
    description:
      - Name of the network interface on the managed host whose XDP hook is managed.
    type: str
    required: true
  pin_dir:
    description:
      - Directory on the bpf filesystem where the program's maps are pinned by name.
      - Defaults to C(/sys/fs/bpf/xdpfleet/<interface>). Created with mode C(0700); the bpf
        filesystem is mounted at C(/sys/fs/bpf) when it is not.
      - A directory outside a bpf filesystem is refused.
    type: path
"""
