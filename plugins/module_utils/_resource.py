# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the resource modules (xdp_rules, xdp_map) share: their states, as Ansible's network resource modules
name them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

STATES = ("merged", "replaced", "overridden", "deleted", "gathered")
