# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's one exception base class, so that a module catches one thing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

MESSAGES_SHOWN = 30  # a failure lists this many problems, then how many more there are


class XdpfleetError(Exception):
    """A problem a task reports as its failure message: bad input, or a refusal of the host or kernel."""


def listed(messages, shown=MESSAGES_SHOWN):
    """The messages joined with '; ', the first `shown` of them and then how many more there are."""
    messages = list(messages)
    text = "; ".join(messages[:shown])
    if len(messages) > shown:
        text += "; and %d more" % (len(messages) - shown)
    return text
