# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""XDP attachment of a network interface over rtnetlink.

Swaps programs atomically through pyroute2: XDP_FLAGS_UPDATE_IF_NOEXIST for a
first attach, XDP_FLAGS_REPLACE with the expected old program fd for an upgrade
or a detach. Reads IFLA_XDP (which program, which mode) through libbpf's
bpf_xdp_query, so a run that changes nothing does not pay for importing
pyroute2; a change imports pyroute2's netlink core alone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import importlib.util
import socket
import sys
import types

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


@contextlib.contextmanager
def _netlink_core_only():
    """Imports of pyroute2.netlink.* in this block skip pyroute2/__init__.py, and leave no trace.

    That file imports the whole library (IPRoute, NDB, IPDB, conntrack, its entry points): 0.15-0.2 s,
    most of an xdp_facts run, for a generic netlink query that needs pyroute2.netlink alone. A bare
    package stands in for pyroute2 during the block; afterwards every pyroute2 module it loaded is
    dropped from sys.modules, so a later `import pyroute2` loads the real package from scratch.
    When pyroute2 is imported already, this changes nothing. Meanwhile no other thread may import
    pyroute2: it would get the stand-in."""
    if "pyroute2" in sys.modules:
        yield
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None:
        raise ImportError("No module named pyroute2")
    stand_in = types.ModuleType("pyroute2")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["pyroute2"] = stand_in
    try:
        yield
    finally:
        for name in [name for name in sys.modules if name == "pyroute2" or name.startswith("pyroute2.")]:
            del sys.modules[name]


class _NetdevFeatures:
    """NETDEV_CMD_DEV_GET of the netdev generic netlink family (Linux >= 6.3), with pyroute2's core."""

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
        with _netlink_core_only():
            return _NetdevFeatures().query(ifindexes)
    except ImportError:
        return None


class _LinkSetter:
    """RTM_SETLINK over a plain rtnetlink socket, with pyroute2's netlink core alone (see _netlink_core_only:
    pyroute2's IPRoute would cost its whole package, about 0.08 s of an attach)."""

    def __init__(self):
        try:
            with _netlink_core_only():
                from pyroute2.netlink import NETLINK_ROUTE, NLM_F_ACK, NLM_F_REQUEST
                from pyroute2.netlink.exceptions import NetlinkError as Pyroute2Error
                from pyroute2.netlink.nlsocket import NetlinkSocket
                from pyroute2.netlink.rtnl import RTM_SETLINK
                from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        except ImportError:
            raise NetlinkError(MISSING_PYROUTE2_HINT)
        _fix_xdp_flags_format(ifinfmsg.xdp.xdp_flags)
        self.message, self.error = ifinfmsg, Pyroute2Error
        self.request = dict(msg_type=RTM_SETLINK, msg_flags=NLM_F_REQUEST | NLM_F_ACK)
        self.socket = NetlinkSocket(NETLINK_ROUTE)

    def set_xdp(self, index, attrs):
        """Sets the IFLA_XDP attributes of one interface; raises pyroute2's NetlinkError when refused."""
        request = self.message()
        request["index"] = index
        request["attrs"] = [("IFLA_XDP", {"attrs": attrs})]
        tuple(self.socket.nlm_request(request, **self.request))  # pyroute2 0.9 answers with a generator

    def close(self):
        self.socket.close()


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
        self._setter = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._setter is not None:
            self._setter.close()

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
        if self._setter is None:
            self._setter = _LinkSetter()
        try:
            self._setter.set_xdp(self.index, attrs)
        except self._setter.error as error:
            raise NetlinkError("cannot %s %s: %s" % (what, self.interface, error.args[-1]), error.code)
