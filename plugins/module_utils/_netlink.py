# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""XDP attachment of a network interface over rtnetlink.

Swaps programs atomically through pyroute2: XDP_FLAGS_UPDATE_IF_NOEXIST for a
first attach, XDP_FLAGS_REPLACE with the expected old program fd for an upgrade
or a detach. Reads IFLA_XDP (which program, which mode) through libbpf's
bpf_xdp_query, so a run that changes nothing does not pay for importing
pyroute2 (about 0.25 s).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "skb": XDP_FLAGS_SKB_MODE, "hw": XDP_FLAGS_HW_MODE}
# IFLA_XDP_ATTACHED -> our mode name and the id that names the program; MULTI is native + skb at once
XDP_ATTACHED_MODES = {1: ("native", "prog_id"), 2: ("skb", "prog_id"), 3: ("hw", "prog_id"),
                      4: ("native", "drv_prog_id")}
MISSING_PYROUTE2_HINT = ("the pyroute2 Python library was not found on this host: install the "
                         "'python3-pyroute2' package (Debian/Ubuntu) or 'pip install pyroute2'")


class NetlinkError(Exception):
    """A refused netlink request; `errno` is the kernel's error number."""

    def __init__(self, message, err=None):
        super(NetlinkError, self).__init__(message)
        self.errno = err


class InterfaceNotFound(NetlinkError):
    pass


def ifindex(interface):
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise InterfaceNotFound("interface %s does not exist on this host" % interface)


def _iproute():
    try:
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    except ImportError:
        raise NetlinkError(MISSING_PYROUTE2_HINT)
    _fix_xdp_flags_format(ifinfmsg.xdp.xdp_flags)
    return IPRoute()


def _fix_xdp_flags_format(xdp_flags):
    """pyroute2 before 0.7.3 (Debian 12 ships 0.7.2) declares IFLA_XDP_FLAGS as a big-endian u16,
    which the kernel refuses with ERANGE; the attribute is a native u32."""
    if xdp_flags.fields != [("value", "I")]:
        xdp_flags.fields = [("value", "I")]


class Link:
    """One interface's XDP hook; use as a context manager so the netlink socket is closed."""

    def __init__(self, interface):
        self.interface = interface
        self.index = ifindex(interface)
        self._ipr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._ipr is not None:
            self._ipr.close()

    def attached(self):
        """(prog id, mode) of the attached XDP program, or (0, None)."""
        xdp = libbpf.xdp_query(self.index)
        if xdp["attach_mode"] not in XDP_ATTACHED_MODES:
            return 0, None
        mode, id_field = XDP_ATTACHED_MODES[xdp["attach_mode"]]
        return xdp[id_field], mode

    def attach(self, prog_fd, mode, expected_fd=None):
        """Attaches prog_fd; with expected_fd, atomically replaces exactly that program."""
        flags = MODE_FLAGS[mode]
        attrs = [("IFLA_XDP_FD", prog_fd)]
        if expected_fd is None:
            flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
        else:
            flags |= XDP_FLAGS_REPLACE
            attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
        attrs.append(("IFLA_XDP_FLAGS", flags))
        action = "detach the XDP program from" if prog_fd < 0 else "attach an XDP program in %s mode to" % mode
        self._set(attrs, action)

    def detach(self, mode, expected_fd):
        """Detaches exactly the program behind expected_fd."""
        self.attach(-1, mode, expected_fd)

    def _set(self, attrs, what):
        from pyroute2.netlink.exceptions import NetlinkError as Pyroute2Error
        if self._ipr is None:
            self._ipr = _iproute()
        try:
            self._ipr.link("set", index=self.index, xdp={"attrs": attrs})
        except Pyroute2Error as error:
            raise NetlinkError("cannot %s %s: %s" % (what, self.interface, error.args[-1]), error.code)
