# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An interface's XDP hook: query, attach, atomic replace, detach.

Everything goes through libbpf, as libxdp does: bpf_xdp_query reads IFLA_XDP (which program, which
mode); bpf_xdp_attach attaches with XDP_FLAGS_UPDATE_IF_NOEXIST the first time, and with
XDP_FLAGS_REPLACE and the expected old program fd swaps (or detaches) exactly that program, so a
program another tool attached meanwhile is never overwritten. The netdev XDP features that
xdp_facts reports need generic netlink beyond that, through pyroute2.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket

from ansible_collections.xdpfleet.xdp.plugins.module_utils import _libbpf as libbpf
from ansible_collections.xdpfleet.xdp.plugins.module_utils._errors import XdpfleetError

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "skb": XDP_FLAGS_SKB_MODE, "hw": XDP_FLAGS_HW_MODE}
# IFLA_XDP_ATTACHED -> our mode name and the id that names the program; MULTI is native + skb at once
XDP_ATTACHED_MODES = {1: ("native", "prog_id"), 2: ("skb", "prog_id"), 3: ("hw", "prog_id"),
                      4: ("native", "drv_prog_id")}
NO_PROGRAM_FD = -1


class LinkError(XdpfleetError):
    """A refused request on an interface; `errno` is the kernel's error number."""

    def __init__(self, message, err=None):
        super(LinkError, self).__init__(message)
        self.errno = err


class InterfaceNotFound(LinkError):
    pass


def ifindex(interface):
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise InterfaceNotFound("interface %s does not exist on this host" % interface)


class _NetdevFeatures:
    """NETDEV_CMD_DEV_GET of the netdev generic netlink family (Linux >= 6.3), through pyroute2."""

    def __init__(self):
        from pyroute2.netlink import NLM_F_REQUEST, genlmsg
        from pyroute2.netlink.exceptions import NetlinkError as Pyroute2Error
        from pyroute2.netlink.generic import GenericNetlinkSocket

        class netdevmsg(genlmsg):  # pylint: disable=invalid-name
            nla_map = (("NETDEV_A_DEV_UNSPEC", "none"), ("NETDEV_A_DEV_IFINDEX", "uint32"),
                       ("NETDEV_A_DEV_PAD", "none"), ("NETDEV_A_DEV_XDP_FEATURES", "uint64"))

        self.message, self.flags, self.error = netdevmsg, NLM_F_REQUEST, Pyroute2Error
        self.socket = GenericNetlinkSocket()

    def of(self, index):
        request = self.message()
        request["cmd"], request["version"] = 1, 1  # NETDEV_CMD_DEV_GET
        request["attrs"] = [("NETDEV_A_DEV_IFINDEX", index)]
        try:
            replies = self.socket.nlm_request(request, msg_type=self.socket.prid, msg_flags=self.flags)
        except self.error as error:
            if error.code == errno.ENODEV:  # the kernel skips devices without any XDP feature
                return 0
            raise
        return replies[0].get_attr("NETDEV_A_DEV_XDP_FEATURES") or 0

    def query(self, ifindexes):
        """{ifindex: NETDEV_XDP_ACT_* bits}, or None without the netdev family (kernel < 6.3)."""
        try:
            self.socket.bind("netdev", self.message)
            return dict((index, self.of(index)) for index in ifindexes)
        except self.error:
            return None
        finally:
            self.socket.close()


def xdp_features(ifindexes):
    """{ifindex: NETDEV_XDP_ACT_* bits} from the kernel, or None when the kernel or pyroute2 cannot tell."""
    try:
        features = _NetdevFeatures()
    except ImportError:
        return None
    return features.query(ifindexes)


class Link:
    """One interface's XDP hook."""

    def __init__(self, interface):
        self.interface = interface
        self.index = ifindex(interface)

    def attached(self):
        """(prog id, mode) of the attached XDP program, or (0, None)."""
        xdp = libbpf.xdp_query(self.index)
        if xdp["attach_mode"] not in XDP_ATTACHED_MODES:
            return 0, None
        mode, id_field = XDP_ATTACHED_MODES[xdp["attach_mode"]]
        return xdp[id_field], mode

    def attach(self, prog_fd, mode, expected_fd=None):
        """Attaches prog_fd where no program is; with expected_fd, atomically replaces exactly that program."""
        self._set(prog_fd, mode, expected_fd, "attach an XDP program in %s mode to" % mode)

    def detach(self, mode, expected_fd):
        """Detaches exactly the program behind expected_fd."""
        self._set(NO_PROGRAM_FD, mode, expected_fd, "detach the XDP program from")

    def _set(self, prog_fd, mode, expected_fd, what):
        flags = MODE_FLAGS[mode] | (XDP_FLAGS_UPDATE_IF_NOEXIST if expected_fd is None else XDP_FLAGS_REPLACE)
        try:
            libbpf.xdp_attach(self.index, prog_fd, flags, 0 if expected_fd is None else expected_fd)
        except libbpf.LibbpfError as error:
            reason = libbpf.kernel_message() or os.strerror(error.errno)
            raise LinkError("cannot %s %s: %s" % (what, self.interface, reason), error.errno)
